"""CPU seconds per image of the default 2D path, this session's code against the previous one in the same
process, image by image alternately (same load): the previous select_plane (every proposed box decoded) and the
previous Check next decoder (the 7 stability boxes at full size, float32, no IoU estimate) are patched in for
the "before" segmenter.

    python benchmarks/busi_cost_ab.py OLD_SELECT_MODULE [--images 10] [--painted 2]

OLD_SELECT_MODULE: the previous core/select_objects.py with absolute imports
(git show c4ed261~1:napari_fewshot/core/select_objects.py | sed 's/^from \\.\\([a-z_]*\\) import/from napari_fewshot.core.\\1 import/').
No cache folder: each image's lite0 features and LiteMedSAM embedding are computed, as for a new set; the first
image of each segmenter (models loading, the painted images' embeddings) is left out.
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run, select_objects  # noqa: E402
from napari_fewshot.core import uncertainty  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("old")
parser.add_argument("--images", type=int, default=10)
parser.add_argument("--painted", type=int, default=2)
parser.add_argument("--data", default="../shared/data/busi")
args = parser.parse_args()
spec = importlib.util.spec_from_file_location("select_old", args.old)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)


def old_decoder(refiner, stack):
    service = refiner.service

    def decode(index, boxes):
        return service.decode([(service.embedding_of(stack, index), boxes, None)])[0]
    decode.memo = {}
    return decode


versions = {"before": (old.select_plane, old_decoder),
            "after": (select_objects.select_plane, uncertainty.refiner_decoder)}
_, images, masks = load_busi(args.data)
picked = list(range(0, len(images), max(1, len(images) // args.images)))[: args.images]
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
segmenters = {name: FewShotSegmenter(SegmentationParams(device="cpu")) for name in versions}
for segmenter in segmenters.values():
    segmenter.set_image([images[i] for i in picked])
seconds = {name: [] for name in versions}
loads = []
for n in range(args.painted, len(picked)):
    for name, (select_plane, decoder) in versions.items():
        select_objects.select_plane, uncertainty.refiner_decoder = select_plane, decoder
        started = time.process_time()
        run(segmenters[name].segment(support, indices=[n]))
        seconds[name].append(time.process_time() - started)
    loads.append(os.getloadavg()[0])
    print(n, {k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
for name, values in seconds.items():
    rest = values[1:]
    print(f"{name}: CPU-s per image after the first: mean {np.mean(rest):.2f}, median {np.median(rest):.2f} "
          f"over {len(rest)} images")
print(f"load average (1 min) while measured: {min(loads):.1f}-{max(loads):.1f}")
