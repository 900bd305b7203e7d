"""Does one new box flip an untouched BUSI image? (session 21, helper "flips"; how tests/test_select_flips.py's case was
found). A set of BUSI images: SUPPORT painted (reference masks, or with --box the box tool's masks of their reference
box + 10 %), Segment; NEW painted too, Segment again; per image of OTHERS its Dice before -> after, per KEEPS setting.

    KEEPS=none,-0.03 OMP_NUM_THREADS=1 python benchmarks/busi_flip_probe.py "SUPPORT,..." NEW "OTHERS,..." [--box]

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound (possibly BUSI) and abdominal CT/MR
sets, so these figures may be optimistic.
"""
import sys, time
import numpy as np
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
from napari_fewshot.core import select_objects
from napari_fewshot.evaluation.datasets import load_busi
from napari_fewshot.io import read_volume, read_busi_mask
from pathlib import Path
from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter, clip_box
from napari_fewshot.core.sam_prompt import box_of
BOX = '--box' in sys.argv
B = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'busi'
def load(name):
    sub, stem = name.split('/')
    p = B/sub/f'{stem}.png'
    v = read_volume(p).data[0]
    v = v if v.ndim == 2 else v.mean(-1).astype(v.dtype)
    return v, read_busi_mask(p).astype(bool)
support = sys.argv[1].split(',')
new = sys.argv[2]
others = sys.argv[3].split(',')
names = support + [new] + others
data = [load(n) for n in names]
import os
for keep in [None if k == "none" else float(k) for k in os.environ.get("KEEPS", "none,0").split(",")]:
    select_objects.KEEP = keep
    t0 = time.process_time()
    seg = FewShotSegmenter(SegmentationParams())
    seg.set_image([d[0] for d in data])
    paint = [np.zeros(d[1].shape, np.uint8) for d in data]
    if BOX:
        bs = BoxSegmenter(BoxParams(cached_planes=len(data)))
        ref = [bs.mask(seg.stack.slice(i), clip_box(box_of(data[i][1], 0.1), seg.stack.shape_of(i))) for i in range(len(support)+1)]
    else:
        ref = [data[i][1] for i in range(len(support)+1)]
    for i in range(len(support)):
        paint[i] = ref[i].astype(np.uint8)
    first = run(seg.segment(paint)).labels
    paint[len(support)] = ref[len(support)].astype(np.uint8)
    second = run(seg.segment(paint)).labels
    k0 = len(support) + 1
    print('KEEP', keep, 'cpu', round(time.process_time() - t0, 1))
    for i, n in enumerate(others, start=k0):
        a, b = dice(np.asarray(first[i]) == 1, data[i][1]), dice(np.asarray(second[i]) == 1, data[i][1])
        print(f'  {n:26s} {a:.3f} -> {b:.3f}  same {np.array_equal(first[i], second[i])}')
