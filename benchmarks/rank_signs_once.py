"""Check next's signs on the box loop's first segmentation (issue 20 item 3), without the loop: the draw of
`evaluate busi --protocol interactive --correct box --images 20 --shots 3 --seed SEED` (the same images, the same
first three boxes: jitter from random.Random(f'{SEED}-jitter') in drag order, through clip_box + BoxSegmenter.mask),
one Segment with the defaults, then per image not boxed: its Dice, Check next's estimated error and signs, and
LiteMedSAM-embedding likenesses of its prediction (normalised mean embeddings, cosines): with the boxed lesions
(fg_mean, fg_max), with the rings around them (bg_mean, bg_max), with its own ring (own_ring, 1 - the selection's
contrast); and the selection's margin (the winner's score minus the best other object's among the candidates).

    OMP_NUM_THREADS=1 python benchmarks/rank_signs_once.py SEED OUT.json [CACHE_DIR]

Session 15, helper "loop2"."""

import dataclasses
import json
import random
import sys
import time

import numpy as np

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
from napari_fewshot.core import select_objects as so
from napari_fewshot.core import uncertainty as U
from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter
from napari_fewshot.core.select_objects import embedding_mean, ring_around
from napari_fewshot.evaluation.datasets import seeded_busi_pool
from napari_fewshot.evaluation.interactive_images import box_mask, dragged_box

seed, out = int(sys.argv[1]), sys.argv[2]
params = SegmentationParams()
if len(sys.argv) > 3:
    params = dataclasses.replace(params, cache_dir=sys.argv[3])
started, cpu = time.perf_counter(), time.process_time()
names, drawn, pool, masks = seeded_busi_pool("../shared/data/busi", 3, 20, 10, seed, "images left to box")
names = [names[d] for d in drawn]
segmenter = FewShotSegmenter(params)
segmenter.set_image(pool)
stack = segmenter.stack
boxes = BoxSegmenter(BoxParams(cached_planes=20), device=params.device)
jitter = random.Random(f"{seed}-jitter")
boxed = {j: box_mask(boxes, stack, j, dragged_box(masks[j], jitter)) for j in range(3)}
support = [boxed[j].astype(np.uint8) if j in boxed else np.zeros(m.shape, np.uint8) for j, m in enumerate(masks)]
signs = {}
plain_error = U.image_error


def traced(scores, labels, sizes, scale, stability=None, quality=None):
    i = sys._getframe(1).f_locals.get("i", -1)
    area = float(np.count_nonzero(labels)) / labels.size
    typical = float(np.median(sizes)) if len(sizes) else area
    signs[int(i)] = {"contrast": U.foreground_contrast(scores, labels) if area else None,
                     "size_ratio": area / typical if area else None, "stability": stability, "quality": quality}
    return plain_error(scores, labels, sizes, scale, stability, quality)


U.image_error = traced
fits, found, selection = [], [], {}
plain_score, plain_candidates, plain_plane = so.selection_score, so.candidates, so.select_plane


def traced_score(embedding, mask, profile):
    fits.append(plain_score(embedding, mask, profile))
    return fits[-1]


def traced_candidates(*args, **kwargs):
    found.append(plain_candidates(*args, **kwargs))
    return found[-1]


def traced_plane(*args, **kwargs):
    """The selection's own margin: the winner's score minus that of the best candidate that is another object
    (IoU < 0.2 with the winner); None when there is no other object among the candidates."""
    i = sys._getframe(1).f_locals.get("i", -1)
    fits.clear(), found.clear()
    labels = plain_plane(*args, **kwargs)
    if found and len(found[0][1]):
        masks, scores = found[0][1], fits[:len(found[0][1])]
        best = int(np.argmax(scores))
        other = [scores[n] for n, m in enumerate(masks)
                 if np.count_nonzero(m & masks[best]) < 0.2 * np.count_nonzero(m | masks[best])]
        selection[int(i)] = {"best_fit": float(scores[best]), "candidates": len(masks),
                             "margin": None if not other else float(scores[best] - max(other))}
    return labels


so.selection_score, so.candidates, so.select_plane = traced_score, traced_candidates, traced_plane
result = run(segmenter.segment(support, empty_slices=[]))
service = segmenter.refiner.service


def unit(j, mask):
    v = embedding_mean(service.embedding_of(stack, j), np.asarray(mask, bool))
    return None if v is None else (v / v.norm()).cpu().numpy().astype(np.float64)


def ring(mask):
    mask = np.asarray(mask, bool)
    return ring_around(mask, max(3, int(round(0.25 * np.sqrt(mask.sum())))))


S = np.stack([unit(k, boxed[k]) for k in boxed])
R = np.stack([unit(k, ring(boxed[k])) for k in boxed])
rows = []
for j in range(3, 20):
    m = np.asarray(result.labels[j]) == 1
    row = {"image": j, "name": names[j], "dice": dice(m, masks[j]), "error": result.uncertainty.get(j), **signs.get(j, {}),
           **selection.get(j, {})}
    if m.any():
        v, vr = unit(j, m), unit(j, ring(m))
        row.update(fg_mean=float((S @ v).mean()), fg_max=float((S @ v).max()), bg_mean=float((R @ v).mean()),
                   bg_max=float((R @ v).max()), own_ring=float(v @ vr), ref_fg_mean=float((S @ unit(j, masks[j])).mean()))
    rows.append(row)
json.dump({"seed": seed, "support": [names[k] for k in boxed], "rows": rows,
           "seconds": round(time.perf_counter() - started), "cpu_s": round(time.process_time() - cpu)},
          open(out, "w"), indent=1)
print("done", out, round(time.perf_counter() - started), "s")
