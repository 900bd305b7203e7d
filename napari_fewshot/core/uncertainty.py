"""Which predicted slice (or image of a set) to check next.

Volumes: an estimate of how many of a slice's pixels are wrong (below). Images of a set: an estimate of
the image's 1 - Dice (:func:`image_error`), since there a confident miss (a tidy blob on the wrong
structure, or nothing at all) must come first, and the boundary band alone ranks it low. Where LiteMedSAM
refined the set, the strongest sign is how differently it redraws the prediction when its box moves a little
(:func:`box_signs`): a lesion comes out the same, a box around shadow or fat does not. That sign decodes 7 boxes
per image; by default (:data:`CHECK_NEXT` "estimate") an image LiteMedSAM drew ranks by LiteMedSAM's own IoU
estimate of the mask from the prediction's box alone, one box, which ranked as well (BENCHMARKS.md, session 16),
raised where the drawn object barely stands out from its surroundings in LiteMedSAM's embedding (core/standout.py:
a crisp outline of tissue around a small lesion, which that estimate rates well; session 25).

Slices of a volume:

Errors of a prototype segmentation sit where the labels change: along the boundary of each predicted
organ, and where a slice disagrees with its neighbours (an organ that ends a slice too early or too
late). The estimate sums, over the feature cells of that band, the probability that the label there
is wrong (1 - the top class probability, PANet's softmax of scale x cosine), in pixels. Cells far
from any boundary add nothing, however unsure the matching is there: the final labels (after the
3D clean-up) decide there, and they are what the clinician signs.

Chosen by measurement (BENCHMARKS.md, "Interactive correction"): summed over the whole slice, the same
probability ranked slices far from the organs first (unsure, but already empty after the clean-up);
along the boundaries it follows the true number of wrong pixels closely.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

Decoder = Callable[[int, np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]

from .candidate_score import ring_contrast
from .sam_prompt import box_of


def cell_labels(labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The (H, W) labels sampled at the centres of an (h, w) grid of feature cells -> (h, w)."""
    rows = ((np.arange(grid[0]) + 0.5) * labels.shape[0] / grid[0]).astype(np.int64)
    cols = ((np.arange(grid[1]) + 0.5) * labels.shape[1] / grid[1]).astype(np.int64)
    return labels[np.ix_(rows, cols)]


def boundary_band(cells: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """Cells on or next to a label change within the slice, or where a neighbouring slice's label differs.

    cells: (h, w) labels; neighbours: the (h, w) labels of the adjacent slices (none for a 2D image).
    Returns (h, w) bool."""
    change = np.zeros(cells.shape, bool)
    change[1:] |= cells[1:] != cells[:-1]
    change[:-1] |= cells[1:] != cells[:-1]
    change[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    change[:, :-1] |= cells[:, 1:] != cells[:, :-1]
    for other in neighbours:
        change |= other != cells
    return ndimage.binary_dilation(change, iterations=1)


def expected_errors(scores: np.ndarray, labels: np.ndarray, neighbours: list[np.ndarray], scale: float,
                    band: np.ndarray | None = None) -> float:
    """Expected wrong pixels of one slice.

    scores: (K + 1, h, w) class similarity on the feature grid; labels: (H, W) final labels of the slice;
    neighbours: final labels (H, W) of the adjacent slices of a volume (empty list for a 2D image); band: the
    (h, w) bool boundary_band when the caller has it. The softmax is taken on the band's cells alone (only they
    are summed), in float64: 1 - the top probability is 1 - 1 / sum_k exp(scale (s_k - s_max)).
    """
    if band is None:
        band = slice_band(scores.shape[1:], labels, neighbours)
    if not band.any():
        return 0.0
    cells = scale * scores[:, band].astype(np.float64)  # (K + 1, cells of the band)
    top = 1.0 / np.exp(cells - cells.max(0)).sum(0)
    return float((1.0 - top).sum()) * labels.size / band.size


def slice_band(grid: tuple[int, int], labels: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """boundary_band of the (H, W) `labels` and its neighbours' on a (h, w) grid of feature cells."""
    return boundary_band(cell_labels(labels, grid), [cell_labels(n, grid) for n in neighbours])


def rank_slices(coarse: dict[int, np.ndarray], labels, is_volume: bool, scale: float,
                support: Sequence[int] = (), decode: Decoder | None = None, settle=None,
                ambiguity: dict[int, float] | None = None,
                standout: dict[int, float] | None = None) -> dict[int, float]:
    """What to check first, for every slice in `coarse` (slice -> (K + 1, h, w) scores), higher first.

    labels: (S, H, W) array or list of (H_i, W_i) final labels. A volume: expected wrong pixels per slice
    (neighbours count). Images of a set (not a volume): estimated 1 - Dice (:func:`image_error`), against the
    objects on the `support` images (indices into labels whose labels are the painted support); with
    `decode` (image index, (N, 4) boxes -> (N, H, W) probabilities, or (probabilities, (N,) LiteMedSAM's IoU
    estimate of each mask): LiteMedSAM's decoder on that image), also how stable the prediction's own box
    redraws it (:func:`box_signs`) and, when the decoder gives it, LiteMedSAM's own estimate of how good the
    mask from that box is; which of them, and how many boxes are decoded, :data:`CHECK_NEXT` says (by default
    1 - that estimate alone, one box per image). ambiguity: image -> core/ambiguity.py's sign of its selection
    (how close another object scored), added to 1 - that estimate with :data:`AMBIGUITY_WEIGHT`; standout: image ->
    core/standout.py's sign in [0, 1] (how little its drawn object stands out from its ring), added with
    :data:`STANDOUT_WEIGHT`. Volumes ignore `decode`, `ambiguity` and `standout`; settle (volumes): slice -> (h, w)
    cells -> the scores made exact there (core/bounded.BoundedScores.settle)."""
    if not is_volume:
        sizes = support_sizes([labels[i] for i in support])
        out = {}
        for i, scores in coarse.items():
            drawn = decode is not None and np.any(labels[i])  # nothing found: 1 whatever the decoder says
            jittered = JITTERED_BOXES if CHECK_NEXT == "signs" else 0
            stable, quality = _stability(labels[i], decode, i, jittered) if drawn else (None, None)
            if jittered == 0 and quality is not None:  # LiteMedSAM's estimate of its own box's mask alone
                out[i] = 1.0 - float(np.clip(quality, 0.0, 1.0))
                if ambiguity and AMBIGUITY_WEIGHT:  # a rival object elsewhere scored nearly as well
                    out[i] += AMBIGUITY_WEIGHT * ambiguity.get(i, 0.0)
                if standout and STANDOUT_WEIGHT:  # a crisp outline of something that looks like its surroundings
                    out[i] += STANDOUT_WEIGHT * standout.get(i, 0.0)
                continue
            out[i] = image_error(scores, labels[i], sizes, scale, stable, quality)
        return out
    near = {i: [labels[j] for j in (i - 1, i + 1) if 0 <= j < len(labels)] for i in coarse}
    bands = {i: slice_band(scores.shape[1:], labels[i], near[i]) for i, scores in coarse.items()}
    if settle is not None:  # scores exact only where labels read them (core/bounded.py): the bands too, now
        exact = settle(bands)
        coarse = {i: exact[i] for i in coarse}
    return {i: expected_errors(scores, labels[i], near[i], scale, bands[i]) for i, scores in coarse.items()}


# -- images of a set: estimated 1 - Dice ------------------------------------------------------------
# Measured on BUSI (BENCHMARKS.md, "Check next on image sets"): the signs of a miss, each mapped to [0, 1]. The
# stability sign ranks best alone (Spearman with 1 - Dice 0.71 / 0.54 on the loops of draws 0 / 1, against 0.62 /
# 0.41 for the other three together); with a gain of 4 next to the others, 0.72 / 0.63.
CONTRAST_GOOD = 1.0  # foreground evidence inside vs around the prediction, in standard deviations of the image's
SIZE_NEAR = float(np.log(4.0))  # lesions vary: an area within 4x of the support objects' median is no sign of a miss
SIZE_FAR = float(np.log(16.0))  # 16x larger or smaller than that: surely wrong
RING_CELLS = 3  # feature cells around the prediction that count as "around"
JITTER = 0.1  # box_signs: each side of the prediction's box moved by up to this share of the box's size
JITTERED_BOXES = 6
CHECK_NEXT = "estimate"
"""How an image of a set that LiteMedSAM drew ranks (issue 20's cost: each decoded box ~0.085 CPU-s in f32):
"signs": :func:`image_error` with the stability of JITTERED_BOXES moved boxes, averaged with 1 - LiteMedSAM's IoU
estimate of the prediction's box (7 boxes decoded; until session 16); "estimate": 1 - that IoU estimate alone (1
box). BUSI, the box loop's first segmentation, Spearman with 1 - Dice on seeds 1 / 2 (chosen on) / 0: signs
0.58 / 0.70 / 0.80, estimate 0.58 / 0.70 / 0.82; the box loop, mean Dice of the 20 after 4-13 drags, signs /
estimate: seed 1 0.754 / 0.773 (noc_85 never either way), seed 2 0.777 / 0.799 (noc_85 13 / 12) (BENCHMARKS.md,
session 16 "cost"). A third rule, 1 - the IoU estimate propose and select read when it decoded the kept object (no
box), gave 0.61 / 0.71 / 0.59 and lost held-out seed 0: removed in session 17 (commit b2b1b32 still has it)."""
AMBIGUITY_WEIGHT = 0.1
"""Images of a set that propose and select drew: Check next's sign is 1 - LiteMedSAM's IoU estimate plus this
times core/ambiguity.py's sign (the best candidate elsewhere in the image / the kept object's selection score; 0:
off, and the selection records no rivals). On since session 29: the BUSI box loop with the default encoder on 16 seeds
(`python benchmarks/box_loop_ambiguity.py`) reached mean Dice 0.85 in 8.00 drags on average against 8.44 off, within
10 drags on 14 of 16 seeds against 12 (seeds 8-15, run after the choice was left open on 0-7, agreed: 8.12 vs 8.50),
the mean Dice per drag level to +0.011 (-0.005 after 6 drags). Session 20 had kept it off on lite0's maps (0.1: 12
drags on seed 2 instead of never, one more on seeds 1 and 3)."""
STANDOUT_WEIGHT = 0.2
"""Images of a set that LiteMedSAM drew: Check next's sign is 1 - its IoU estimate plus this times core/standout.py's
sign (how little the drawn object differs from the tissue around it in LiteMedSAM's embedding; 0: off)."""
STABILITY_GAIN = 4.0  # the stability sign: STABILITY_GAIN x (1 - stability), clipped to [0, 1]: 0.75 or less is a miss


def support_sizes(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Foreground fractions of the support images that hold an object (labels != 0 / image size) -> (n,)."""
    return np.array([float(np.count_nonzero(p)) / p.size for p in planes if np.any(p)], float)


def foreground_contrast(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """How much more the prediction looks like the support's objects than its surroundings do.

    scores: (K + 1, h, w) similarity on the feature grid; labels: (H, W) final labels. The foreground evidence
    of a cell is its best class similarity minus its background similarity; returns (mean inside the predicted
    cells - mean over a ring of RING_CELLS cells around them) / the evidence's standard deviation over the
    image. None when the prediction covers no cell or the whole image."""
    inside = cell_labels(labels, scores.shape[1:]) != 0
    if not inside.any() or inside.all():
        return None
    evidence = scores[1:].max(0) - scores[0]
    spread = float(evidence.std()) or 1.0
    return ring_contrast(evidence, inside, RING_CELLS) / spread


def box_signs(labels: np.ndarray, decode: Callable, seed: int = 0,
              jittered: int | None = None) -> tuple[float | None, float | None]:
    """Two signs from LiteMedSAM on the prediction's own box (its bounding box + 10 %, as refine draws it).

    Stability: the mean IoU between the mask decoded from that box and those decoded from JITTERED_BOXES boxes
    whose sides moved by up to JITTER of the box's size (seeded). A lesion redraws the same under any nearby
    box; a box around shadow or fat gives a different mask each time. Quality: the decoder's own IoU estimate
    of the mask from the prediction's box (None when `decode` gives no estimate). A crisp blob on the wrong
    object redraws stably, yet LiteMedSAM rates its mask lower (BENCHMARKS.md, "busi").

    labels: (H, W) final labels (not empty); decode: (N, 4) boxes x0, y0, x1, y1 -> (N, H, W) probabilities, or
    ((N, H, W) probabilities, (N,) IoU estimates); jittered: how many moved boxes (None: JITTERED_BOXES; the
    first k of them are the same for any count). Returns (stability in [0, 1], or None without moved boxes,
    quality in [0, 1] or None)."""
    jittered = JITTERED_BOXES if jittered is None else jittered
    box = box_of(np.asarray(labels) != 0, 0.1)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
    rng = np.random.default_rng(seed)
    boxes = [box] + [box + rng.uniform(-JITTER, JITTER, 4).astype(np.float32) * size for _ in range(jittered)]
    decoded = decode(np.stack(boxes).astype(np.float32))
    probabilities, estimates = decoded if isinstance(decoded, tuple) else (decoded, None)
    masks = np.asarray(probabilities) > 0.5
    ious = []
    for other in masks[1:]:
        union = np.count_nonzero(masks[0] | other)
        ious.append(1.0 if union == 0 else np.count_nonzero(masks[0] & other) / union)
    quality = None if estimates is None else float(np.clip(np.asarray(estimates, np.float64).ravel()[0], 0.0, 1.0))
    return (float(np.mean(ious)) if ious else None), quality


def _stability(labels: np.ndarray, decode: Decoder, index: int,
               jittered: int = JITTERED_BOXES) -> tuple[float | None, float | None]:
    """box_signs of image `index`, remembered in `decode.memo` (when the decoder has one) per labels:
    re-segmenting after a stroke on another image decodes no box of the images whose labels did not change."""
    memo = getattr(decode, "memo", None)
    key = (index, hashlib.blake2b(np.ascontiguousarray(labels).tobytes(), digest_size=16).digest(), jittered)
    if memo is not None and key in memo:
        return memo[key]
    signs = box_signs(labels, partial(decode, index), seed=index, jittered=jittered)
    if memo is not None:
        memo[key] = signs
    return signs


def refiner_decoder(refiner, stack) -> Decoder:
    """The Decoder of :func:`rank_slices` on ``stack``'s images: LiteMedSAM's decoder on each image's embedding,
    from the refiner's LiteMedSAM service (core/sam_service.py; computed there when refine drew the image)."""
    service = refiner.service

    def decode(index: int, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # at the decoder's own resolution (bfloat16 where native): the signs compare masks with each other and
        # read the IoU estimate, no outline is kept; BUSI, 18 predictions: stability within 0.012, quality within
        # 0.003 of full-size float32's, 0.86 -> 0.68 CPU-s per image (benchmarks/busi_rank_lowres_ab.py)
        # one box (Check next's "estimate"): no other mask to compare with, its estimate alone is read: the decoder
        # upscales only the box's cells (sam_service.LOW_RES_INSIDE)
        return service.decode_with_quality([(service.embedding_of(stack, index), boxes, None)], low_res=True,
                                           inside=len(boxes) == 1)[0]

    # Stabilities and quality estimates already measured on this image set with these decoder weights (kept on
    # the refiner, which lives as long as its segmenter): see _stability.
    setting = (stack.signature(), service.decoder_version)
    if refiner.stability_memo[0] != setting:
        refiner.stability_memo = (setting, {})
    decode.memo = refiner.stability_memo[1]
    return decode


def image_error(scores: np.ndarray, labels: np.ndarray, sizes: np.ndarray, scale: float,
                stability: float | None = None, quality: float | None = None) -> float:
    """Estimated 1 - Dice of one predicted image of a set, in [0, 1].

    scores: (K + 1, h, w) similarity; labels: (H, W) final labels; sizes: the support objects' foreground
    fractions (support_sizes; empty: no size term). Nothing predicted: 1. Otherwise each sign of a miss is
    mapped to [0, 1] and they combine as independent chances of being wrong, 1 - prod(1 - e):
    - contrast: 1 - foreground_contrast / CONTRAST_GOOD (a blob that does not stand out from its surroundings);
    - size: the log-distance of the predicted area to the support objects' median area, 0 up to SIZE_NEAR, 1
      from SIZE_FAR (measured: better than the distance to the nearest support object's);
    - boundary: the expected wrong pixels along the label changes (expected_errors) over the predicted area
      plus the median support object's, a Dice-like ratio;
    - stability (when given, :func:`box_signs`): STABILITY_GAIN x (1 - stability).
    With `quality` (LiteMedSAM's IoU estimate of the mask from the prediction's box, :func:`box_signs`), the
    result is the mean of that estimate and 1 - quality, LiteMedSAM's own estimate of the error: two estimates
    of 1 - Dice, unweighted. Added, not combined as one more independent chance: the signs above saturate near
    1 on many images and then cannot order them; 1 - quality puts the crisp misses the stability sign calls safe
    higher (BENCHMARKS.md, "busi")."""
    area = float(np.count_nonzero(labels)) / labels.size
    if area == 0.0:
        return 1.0
    contrast = foreground_contrast(scores, labels)
    signs = [1.0 if contrast is None else float(np.clip(1.0 - contrast / CONTRAST_GOOD, 0.0, 1.0))]
    typical = float(np.median(sizes)) if len(sizes) else area
    if len(sizes):
        distance = abs(float(np.log(area / typical)))
        signs.append(float(np.clip((distance - SIZE_NEAR) / (SIZE_FAR - SIZE_NEAR), 0.0, 1.0)))
    wrong = expected_errors(scores, labels, [], scale)
    signs.append(float(np.clip(wrong / ((area + typical) * labels.size), 0.0, 1.0)))
    if stability is not None:
        signs.append(float(np.clip(STABILITY_GAIN * (1.0 - stability), 0.0, 1.0)))
    error = float(1.0 - np.prod([1.0 - e for e in signs]))
    return error if quality is None else 0.5 * (error + 1.0 - float(np.clip(quality, 0.0, 1.0)))
