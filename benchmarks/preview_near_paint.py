"""What the visible slice's preview draws before the 3D clean-up, slice by slice, against the whole volume's result
(core/postprocess.near_paint; session 16, the lead).

    OMP_NUM_THREADS=1 python benchmarks/preview_near_paint.py > OUT.txt

The CT sample, liver and spleen painted on 2 slices from its reference (resegment_gui.scan("ct")), Segment all
(coarse, refinement left out as the window's preview does), then every third unpainted slice segmented alone as
the window's preview does: per class, the pixels the preview draws that the whole volume's result does not
("preview-only"), those it shares ("agreeing"), and the result's own pixels on that slice.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import torch  # noqa: E402,F401  (before anything that might load Qt)

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from resegment_gui import scan  # noqa: E402

volume, truth, painted, organ = scan("ct", 0)
segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
segmenter.set_image(volume)
support = np.zeros_like(truth)
support[painted] = truth[painted]
full = run(segmenter.segment(support, refine_later=True)).labels
print("painted", painted)
for cls in (1, 2):
    zs = [z for z in range(len(full)) if (full[z] == cls).any()]
    print("class", cls, "result's slices", zs[0], "-", zs[-1])
for z in range(0, len(volume), 3):
    if z in painted:
        continue
    alone = run(segmenter.segment(support, indices=[z], refine_later=True)).labels[z]
    only = {c: int(((alone == c) & (full[z] != c)).sum()) for c in (1, 2)}
    agree = {c: int(((alone == c) & (full[z] == c)).sum()) for c in (1, 2)}
    result = {c: int((full[z] == c).sum()) for c in (1, 2)}
    print(z, "preview-only px", only, "agreeing px", agree, "result px", result, flush=True)
