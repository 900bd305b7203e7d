"""The box-correction loop on an image set, simulated: how many box drags until the whole set can be signed?

A sonographer opens a set of `images` ultrasound images (BUSI layout, `load_busi`), drags a box around the
lesion of the first `shots` images of a seeded draw (each box -> LiteMedSAM mask -> support), presses
Segment, then repeatedly takes the image Check next proposes (or, for comparison, the worst image: an
oracle, or the next in draw order), drags a box around its lesion, and segments again. A drag is the
reference lesion's bounding box grown by `margin` of its size per side (`box_of`, as refine's boxes),
each corner moved by a seeded whole-pixel jitter in [-jitter, +jitter], then clipped and turned into a
mask by the same code the napari box tool calls (`clip_box`, then `BoxSegmenter.mask` on the segmenter's
own windowed plane `stack.slice(i)`). The boxed image becomes support with that mask. With `gate`
(core/support_gate.py) a support's foreground prototypes are left out where, leave one out on the signed
images, they make the others worse.

Score after each drag: the mean Dice over all `images` images of what would be signed: the box's mask on
a boxed image (not the reference: a box is not perfect), the prediction elsewhere. `noc_85` is the number
of drags (the first `shots` included) after which that mean first reaches 0.85 (null: never within
`shots + rounds` drags). The baseline a user has without the model: every image boxed, `images` drags;
its mean Dice is reported as `box_every_image`.

With `accept_above` (a Dice), the simulated clinician signs a proposed image whose prediction already reaches it
as it is (Accept slice, Shift+A: the prediction becomes support) instead of boxing it: one click, not a drag.
`noc_85` still counts drags; `accepts` says how many images were accepted by then, and a round is one action.

Check next's ranking is also scored each round: the Spearman correlation of `result.uncertainty` with
1 - Dice over the images not boxed yet, and how many of the 3 worst are among the first 3 it proposes.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np

from ..core import AdaptParams, FewShotSegmenter, SegmentationParams, dice, run
from ..core.box_to_mask import BoxParams, BoxSegmenter, clip_box
from ..core.sam_prompt import box_of
from ..core.support_gate import GateParams, SupportGate
from ..errors import FewShotError
from .adaptation import adapted_state
from .datasets import seeded_busi_pool
from .interactive import check_pick, check_rounds, noc, pick_suggested, pick_worst

TARGET = 0.85
FLIP = 0.1  # an image not boxed "flips" when a new box moves its Dice by more than this
WORST_K = 3  # ranking quality: the share of the K worst images among the first K proposed


def dragged_box(mask: np.ndarray, rng: random.Random, margin: float = 0.1, jitter: int = 5) -> np.ndarray:
    """A simulated drag around ``mask`` ((H, W) bool, not empty): its bounding box grown by ``margin`` of its
    size per side, each of x0, y0, x1, y1 moved by a whole number of pixels drawn from [-jitter, jitter]."""
    box = box_of(mask, margin)
    if box is None:
        raise FewShotError("An image without a reference lesion cannot be boxed.")
    return box + np.array([rng.randint(-jitter, jitter) for _ in range(4)], np.float32)


def box_mask(boxes: BoxSegmenter, stack, index: int, box: np.ndarray) -> np.ndarray:
    """The box tool's path from a drag to paint: the box clipped to image ``index``'s own size, then
    LiteMedSAM on the plane windowed like the features -> (H_i, W_i) bool."""
    return boxes.mask(stack.slice(index), clip_box(box, stack.shape_of(index)))


def ranking_quality(uncertainty: dict[int, float], errors: dict[int, float], k: int = WORST_K) -> dict:
    """How well ``uncertainty`` (image -> score, higher = check first) orders ``errors`` (image -> 1 - Dice)
    over the images both have: Spearman's rho, and how many of the k worst are among the first k proposed."""
    from scipy.stats import spearmanr

    keys = sorted(set(uncertainty) & set(errors))
    rho = spearmanr([uncertainty[i] for i in keys], [errors[i] for i in keys])[0] if len(keys) > 1 else np.nan
    first = sorted(keys, key=lambda i: (-uncertainty[i], i))[:k]
    worst = sorted(keys, key=lambda i: (-errors[i], i))[:k]
    return {"spearman": None if np.isnan(rho) else float(rho),
            "worst_in_first": len(set(first) & set(worst)) if keys else None, "k": min(k, len(keys))}


def unboxed_changes(per_image: list[dict], first: list[str], picked: list[str], drags: list[str],
                    flip: float = FLIP) -> dict:
    """What each new box did to the images nobody has boxed: per segmentation after the first, the mean Dice
    change of the images boxed neither before it nor by the drag just made, and how many of them fell / rose by
    more than `flip`. per_image: per segmentation, image name -> Dice; first: the images boxed before the first
    segmentation; picked: the image boxed after each segmentation; drags: the key of each segmentation (its drag
    count)."""
    out = {}
    for n in range(min(len(picked), len(per_image) - 1)):
        untouched = [i for i in per_image[n] if i not in set(first) | set(picked[:n + 1])]
        delta = [per_image[n + 1][i] - per_image[n][i] for i in untouched]
        out[str(drags[n + 1])] = {"mean_change": float(np.mean(delta)) if delta else None,
                                  "fell": int(sum(d < -flip for d in delta)), "rose": int(sum(d > flip for d in delta))}
    return out


def evaluate_busi_boxes(
    folder,
    rounds: int = 10,
    pick: str = "suggested",
    shots: int = 3,
    images: int = 20,
    seed: int = 0,
    params: SegmentationParams | None = None,
    adapt: AdaptParams | None = None,
    log: Callable[[str], None] = lambda _: None,
    margin: float = 0.1,
    jitter: int = 5,
    box_every_image: bool = True,
    gate: GateParams | None = None,
    accept_above: float | None = None,
) -> dict:
    """The simulated box-correction loop on a BUSI-like folder; returns the JSON-able report (module docstring)."""
    check_pick(pick)
    check_rounds(rounds)
    params = params or SegmentationParams()
    started = time.perf_counter()
    names, drawn, pool, masks = seeded_busi_pool(folder, shots, images, rounds, seed, "images left to box")
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(pool)
    adapted_state(segmenter, adapt, log)
    gates = SupportGate(gate).install(segmenter) if gate is not None else None
    stack = segmenter.stack
    boxes = BoxSegmenter(BoxParams(cached_planes=images), device=params.device)
    jitter_rng = random.Random(f"{seed}-jitter")
    boxed: dict[int, np.ndarray] = {}  # image -> its box's mask (or its accepted prediction), in the order signed
    accepted: set[int] = set()  # images signed as predicted (accept_above)

    def drag(j: int) -> None:
        boxed[j] = box_mask(boxes, stack, j, dragged_box(masks[j], jitter_rng, margin, jitter))
        log(f"drag {len(boxed)}: {names[drawn[j]]}, box Dice {dice(boxed[j], masks[j]):.3f}")

    for j in range(shots):
        drag(j)
    curve, unboxed, ranking, picked, seconds, per_image, drag_counts = [], [], [], [], [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        free = [j for j in range(images) if j not in boxed]
        labels, uncertainty = {}, {}
        if free:  # every image boxed: nothing left to segment
            support = [boxed[j].astype(np.uint8) if j in boxed else np.zeros(m.shape, np.uint8)
                       for j, m in enumerate(masks)]
            empty = [j for j, mask in boxed.items() if not mask.any()]  # a box that found nothing: all background
            result = run(segmenter.segment(support, empty_slices=empty))
            labels, uncertainty = {j: np.asarray(result.labels[j]) == 1 for j in free}, dict(result.uncertainty)
        seconds.append(round(time.perf_counter() - t0, 2))
        scores = {j: dice(boxed[j] if j in boxed else labels[j], masks[j]) for j in range(images)}
        curve.append(float(np.mean(list(scores.values()))))
        drag_counts.append(len(boxed) - len(accepted))
        per_image.append({names[drawn[j]]: round(float(scores[j]), 4) for j in range(images)})
        unboxed.append(float(np.mean([scores[j] for j in free])) if free else None)
        errors = {j: 1.0 - scores[j] for j in free}
        ranking.append(ranking_quality(uncertainty, errors))
        if gates is not None and free:
            ranking[-1]["gated"] = [names[drawn[j]] for j in gates.history[-1]["gated"]]
        log(f"{len(boxed)} drags ({pick}): mean Dice {curve[-1]:.3f} over {images} images; Check next's ranking "
            f"{ranking[-1]}")
        if r == rounds or not free:
            break
        error_array = np.zeros(images)
        error_array[free] = [errors[j] for j in free]
        if pick == "suggested":
            j = pick_suggested(result, free, sorted(boxed))
        elif pick == "worst":
            j = pick_worst(error_array, free)
        else:
            j = free[0]  # the next in draw order
        accept = accept_above is not None and scores[j] >= accept_above
        picked.append({"image": names[drawn[j]], "dice_before": scores[j], "accepted": accept,
                       "rank_of_error": 1 + sorted(free, key=lambda i: -errors[i]).index(j)})
        if accept:  # right as predicted: signed with one click (Shift+A), its prediction becomes support
            boxed[j] = labels[j].copy()
            accepted.add(j)
            log(f"accepted {names[drawn[j]]} as predicted (Dice {scores[j]:.3f})")
        else:
            drag(j)
    every = None
    if box_every_image:
        for j in range(images):
            if j not in boxed or j in accepted:  # the baseline boxes every image, the accepted ones too
                boxed[j] = box_mask(boxes, stack, j, dragged_box(masks[j], jitter_rng, margin, jitter))
        every = float(np.mean([dice(boxed[j], masks[j]) for j in range(images)]))
    # each segmentation's key: its drag count, and "+Na" after N accepted images (accept_above)
    drags = [str(d) if shots + r == d else f"{d}+{shots + r - d}a" for r, d in enumerate(drag_counts)]
    reached = noc(curve, TARGET)
    rhos = [q["spearman"] for q in ranking if q["spearman"] is not None]
    return {
        "dice_per_drag": dict(zip(drags, curve)),
        "dice_per_drag_unboxed": dict(zip(drags, unboxed)),
        "dice_per_image": dict(zip(drags, per_image)),
        "unboxed_changes": unboxed_changes(per_image, [names[drawn[j]] for j in range(shots)],
                                           [p["image"] for p in picked], drags),
        "noc_85": None if reached is None else drag_counts[reached],
        "accepts": None if accept_above is None or reached is None else shots + reached - drag_counts[reached],
        "noc_rule": f"noc_85: drags (the first {shots} included) after which the mean Dice over the {images} images "
                    "(a boxed image scored by its box's mask) first reaches 0.85; null: never",
        "box_every_image": every,
        "dice_final": curve[-1],
        "ranking_per_round": ranking,
        "ranking_spearman_mean": float(np.mean(rhos)) if rhos else None,
        "picked": picked,
        "segment_seconds": seconds,
        "seconds": round(time.perf_counter() - started, 2),
        "config": {"protocol": "interactive", "correct": "box", "pick": pick, "shots": shots, "images": images,
                   "encoder": segmenter.encoder_name,  # what params.encoder "auto" stood for
                   "rounds": rounds, "seed": seed, "margin": margin, "jitter": jitter, "target": TARGET,
                   "accept_above": accept_above,
                   "gate": None if gate is None else gate.__dict__,
                   "draw": f"random.Random({seed}).sample(range({len(names)}), {images}); the first {shots} "
                           "boxed first; jitter from random.Random(f'{seed}-jitter')",
                   "images_drawn": [names[i] for i in drawn], "params": params.to_dict(),
                   "adapt": None if adapt is None else adapt.__dict__, "folder": str(folder)},
    }
