"""Check next's stability sign with fewer decoded boxes, measured on the box loop's first segmentation (issue 20
cost; session 16, helper "cost"): one Segment with the defaults on the draw of `evaluate busi --protocol interactive
--correct box --images 20 --shots 3 --seed SEED` (the same images and first three boxes as
benchmarks/rank_signs_once.py), recording per image not boxed:
- its Dice, Check next's estimated error, and the other signs of image_error (contrast, size, boundary) mapped to
  [0, 1], so the error can be recomputed offline with another stability;
- the IoUs of the JITTERED_BOXES (6) jittered masks with the prediction's box's mask (box_signs draws its jitter
  from one seeded generator in order, so the first k of them are exactly what JITTERED_BOXES = k decodes) and the
  decoder's IoU estimate of the prediction's box (quality);
- propose and select's decoded candidates: per candidate its box, its box IoU and mask IoU with the winner's
  (at the decoder's resolution), its selection score and LiteMedSAM's IoU estimate (the decoder gives it anyway).

    OMP_NUM_THREADS=1 python benchmarks/stability_levers_once.py SEED OUT.json

Then `python benchmarks/stability_levers_report.py OUT.json ...` compares the variants.
"""

import json
import random
import sys
import time

import numpy as np

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
from napari_fewshot.core import select_objects as so
from napari_fewshot.core import uncertainty as U
from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter
from napari_fewshot.evaluation.datasets import seeded_busi_pool
from napari_fewshot.evaluation.interactive_images import box_mask, dragged_box

seed, out = int(sys.argv[1]), sys.argv[2]
U.CHECK_NEXT = "signs"  # the recorded error is today's signs (the report recomputes every variant from the parts)
started, cpu = time.perf_counter(), time.process_time()
names, drawn, pool, masks = seeded_busi_pool("../shared/data/busi", 3, 20, 10, seed, "images left to box")
names = [names[d] for d in drawn]
segmenter = FewShotSegmenter(SegmentationParams())
segmenter.set_image(pool)
stack = segmenter.stack
boxes = BoxSegmenter(BoxParams(cached_planes=20), device="cpu")
jitter = random.Random(f"{seed}-jitter")
boxed = {j: box_mask(boxes, stack, j, dragged_box(masks[j], jitter)) for j in range(3)}
support = [boxed[j].astype(np.uint8) if j in boxed else np.zeros(m.shape, np.uint8) for j, m in enumerate(masks)]

signs, stab, selection = {}, {}, {}
plain_error, plain_box_signs = U.image_error, U.box_signs


def traced_error(scores, labels, sizes, scale, stability=None, quality=None):
    i = int(sys._getframe(1).f_locals.get("i", -1))
    area = float(np.count_nonzero(labels)) / labels.size
    row = {"area": area}
    if area:
        contrast = U.foreground_contrast(scores, labels)
        others = [1.0 if contrast is None else float(np.clip(1.0 - contrast / U.CONTRAST_GOOD, 0.0, 1.0))]
        typical = float(np.median(sizes)) if len(sizes) else area
        if len(sizes):
            distance = abs(float(np.log(area / typical)))
            others.append(float(np.clip((distance - U.SIZE_NEAR) / (U.SIZE_FAR - U.SIZE_NEAR), 0.0, 1.0)))
        wrong = U.expected_errors(scores, labels, [], scale)
        others.append(float(np.clip(wrong / ((area + typical) * labels.size), 0.0, 1.0)))
        row.update(others=others, typical=typical)
    signs[i] = row
    return plain_error(scores, labels, sizes, scale, stability, quality)


def traced_box_signs(labels, decode, seed=0, jittered=None):  # records 6 moved boxes whatever CHECK_NEXT
    box = U.box_of(np.asarray(labels) != 0, 0.1)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
    rng = np.random.default_rng(seed)
    bxs = [box] + [box + rng.uniform(-U.JITTER, U.JITTER, 4).astype(np.float32) * size for _ in range(U.JITTERED_BOXES)]
    probabilities, estimates = decode(np.stack(bxs).astype(np.float32))
    m = np.asarray(probabilities) > 0.5
    ious = [float(np.count_nonzero(m[0] & o) / max(1, np.count_nonzero(m[0] | o))) for o in m[1:]]
    stab[seed] = {"ious": ious, "quality": float(np.asarray(estimates).ravel()[0]), "box": [float(v) for v in box],
                  "qualities": [float(v) for v in np.asarray(estimates).ravel()]}
    return plain_box_signs(labels, decode, seed, jittered)


U.image_error, U.box_signs = traced_error, traced_box_signs
last_decoded = []
service = segmenter.refiner.service
plain_decode = service.decode


def traced_decode(requests, max_prompts=32, low_res=False, own_weights=False, with_quality=False):
    if not low_res:
        return plain_decode(requests, max_prompts, low_res, own_weights)
    got = service.decode_with_quality(requests, max_prompts, low_res)
    last_decoded.append((np.asarray(requests[0][1], np.float32), got[0][1]))
    return got if with_quality else [p for p, _ in got]


service.decode = traced_decode
plain_plane, plain_candidates, plain_score = so.select_plane, so.candidates, so.selection_score
found, fits = [], []


def traced_candidates(*args, **kwargs):
    found.append(plain_candidates(*args, **kwargs))
    return found[-1]


def traced_score(embedding, mask, profile):
    fits.append(plain_score(embedding, mask, profile))
    return fits[-1]


def box_iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def traced_plane(*args, **kwargs):
    i = int(sys._getframe(1).f_locals.get("i", -1))
    found.clear(), fits.clear(), last_decoded.clear()
    labels = plain_plane(*args, **kwargs)
    if found and len(found[0][1]):
        bxs, ms = found[0][0], found[0][1]
        scores = fits[:len(ms)]
        best = int(np.argmax(scores))
        decoded, estimates = last_decoded[0]
        est = [float(estimates[int(np.flatnonzero((decoded == b).all(1))[0])]) for b in bxs]
        rows = []
        for n, (b, m) in enumerate(zip(bxs, ms)):
            union = np.count_nonzero(m | ms[best])
            rows.append({"box": [float(v) for v in b], "box_iou": box_iou(b, bxs[best]),
                         "mask_iou": float(np.count_nonzero(m & ms[best]) / union) if union else 1.0,
                         "score": float(scores[n]), "estimate": est[n]})
        selection[i] = {"best": best, "candidates": rows, "decoded": int(len(decoded))}
    return labels


so.select_plane, so.candidates, so.selection_score = traced_plane, traced_candidates, traced_score
result = run(segmenter.segment(support, empty_slices=[]))
rows = []
for j in range(3, 20):
    m = np.asarray(result.labels[j]) == 1
    rows.append({"image": j, "name": names[j], "dice": dice(m, masks[j]), "error": result.uncertainty.get(j),
                 **signs.get(j, {}), **stab.get(j, {}), **selection.get(j, {})})
json.dump({"seed": seed, "support": [names[k] for k in boxed], "rows": rows,
           "seconds": round(time.perf_counter() - started), "cpu_s": round(time.process_time() - cpu)},
          open(out, "w"), indent=1)
print("done", out, round(time.perf_counter() - started), "s")
