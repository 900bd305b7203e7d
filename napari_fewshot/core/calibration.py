"""Fine-tune "calibrate": a per-class offset on the coarse cosine scores, chosen leave-one-out on the signed slices.

The prototypes decide *where* a class is: a cell is labelled with the class of its best score (cosine
similarity to the class's nearest prototype, core/matching.py). A scan whose organ matches its own paint less
well than the background does (or better) is cut short (or spills over) everywhere. Calibration adds one offset
per class to its score before the argmax (core/bounded.query_scores), so before the clean-up and LiteMedSAM.

The offset is chosen on the signed slices only (painted, corrected, marked empty), leave one out: each signed
slice is predicted from the OTHER signed slices (its own local prototypes left out, the global ones averaged
without it), and for every offset of a small grid the class's Dice over those held-out predictions (pooled
over the slices, so an empty slice's false positives count) is computed. The best offset wins; ties go to the
smallest |offset| (0 first), and it is shrunk towards 0 by n / (n + shrink) for a class shown on n signed
slices. A class shown on fewer than 2 signed slices gets 0 (its only slice cannot be predicted from the others).
The held-out slices' matches to each other slice are remembered in the segmenter's MatchCache, so the next
correction matches only the new slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import numpy as np
import torch

from .matching import PrototypeGroup
from .predict import upsample
from .prototypes import summed_means
from .slice_reach import restrict
from .support import IGNORE, SupportSet


@dataclass
class Calibration:
    """What calibration chose. offsets: class id -> offset added to its coarse score; shown: class id -> signed
    slices showing it; loo_dice: class id -> (held-out Dice without, with the chosen offset)."""

    offsets: dict[int, float] = field(default_factory=dict)
    shown: dict[int, int] = field(default_factory=dict)
    loo_dice: dict[int, tuple[float, float]] = field(default_factory=dict)

    def vector(self, class_ids: Sequence[int]) -> np.ndarray | None:
        """(K + 1,) float32 offsets for `class_ids` (background 0), or None when they are all 0."""
        out = np.array([0.0] + [self.offsets.get(int(c), 0.0) for c in class_ids], np.float32)
        return out if np.any(out != 0) else None


def offset_grid(limit: float, step: float) -> np.ndarray:
    """Offsets -limit .. limit in `step`s, 0 included, ordered by |offset| (0 first, then -step, step, ...)."""
    n = int(round(limit / step)) if step > 0 else 0
    values = np.arange(-n, n + 1) * step
    return values[np.argsort(np.abs(values) + 1e-9 * (values > 0), kind="stable")]


def choose_offset(margins: Sequence[np.ndarray], positives: Sequence[np.ndarray], grid: np.ndarray,
                  objective: str = "pooled") -> tuple[float, float, float]:
    """The offset of `grid` (ordered by |offset|, see :func:`offset_grid`) with the best pooled Dice.

    margins: per held-out slice, the class's score minus its best rival's at the scored pixels (1-D float);
    positives: per slice, whether the reference has the class there (1-D bool, aligned). A pixel is the class
    where margin + offset > 0. objective "pooled": one Dice over all the slices' pixels; "mean": the mean of the
    slices' own Dice (an empty slice: 1 with nothing predicted, else 0). Returns (offset, objective at 0, at
    offset); ties keep the earliest offset in `grid`."""
    if objective == "mean":
        per_slice = [_dice_curve([m], [p], grid) for m, p in zip(margins, positives)]
        curve = np.mean(per_slice, axis=0) if per_slice else np.ones(len(grid))
    else:
        curve = _dice_curve(margins, positives, grid)
    best = int(np.argmax(curve))  # the first maximum: the smallest |offset| among ties
    return float(grid[best]), float(curve[int(np.argmin(np.abs(grid)))]), float(curve[best])


def _dice_curve(margins, positives, grid: np.ndarray) -> np.ndarray:
    """Pooled Dice of "margin + offset > 0" against `positives` for each offset of `grid`."""
    m = np.concatenate([np.asarray(a, np.float64).ravel() for a in margins]) if margins else np.zeros(0)
    pos = np.concatenate([np.asarray(a, bool).ravel() for a in positives]) if positives else np.zeros(0, bool)
    all_sorted, pos_sorted = np.sort(m), np.sort(m[pos])
    n_ref = len(pos_sorted)

    def dice_at(offset: float) -> float:
        # predicted: margin > -offset
        predicted = len(all_sorted) - np.searchsorted(all_sorted, -offset, side="right")
        hit = n_ref - np.searchsorted(pos_sorted, -offset, side="right")
        total = predicted + n_ref
        return 1.0 if total == 0 else 2.0 * hit / total

    return np.array([dice_at(float(o)) for o in grid])


def held_out_scores(segmenter, support: SupportSet, groups: Sequence[PrototypeGroup]) -> dict[int, np.ndarray]:
    """Signed slice -> (K + 1, H, W) float32 coarse scores of it from the OTHER signed slices, upsampled to the slice.

    groups: the segmenter's prototype groups of `support` (FewShotSegmenter._groups: the global group first, then
    one local group per signed slice, key[2] its slice index). The global prototypes are averaged again without
    the held-out slice (a class it alone shows has none); the local groups' matches are cached (MatchCache)."""
    cache = segmenter.cache
    pieces = segmenter._pieces(support)
    by_slice = {key[2]: piece for key, piece in pieces.items()}
    locals_ = [g for g in groups[1:] if g.key is not None]
    out = {}
    for s in support.slice_indices:
        others = [by_slice[t] for t in by_slice if t != s]
        mine = [g for g in locals_ if g.key[2] != s]
        global_group = _global_group(others, support.n_classes)
        use = restrict(segmenter, ([global_group] if global_group is not None else []) + mine, s)
        if not use:
            continue
        with torch.no_grad():
            sim = next(segmenter._matches.class_similarities([(id(cache), cache.generation, s)],
                                                             [partial(cache.get, s)], use))
        out[s] = upsample(sim[None].float(), tuple(support.targets[s].shape))[0].numpy()
    return out


def _global_group(pieces, n_classes: int) -> PrototypeGroup | None:
    """PANet's global prototypes of `pieces` (the mean over the slices that show a class), as an uncached group;
    a class no piece shows has none. None when there are no pieces."""
    if not pieces:
        return None
    sums, shots = summed_means(pieces)
    present = torch.nonzero(shots > 0).flatten()
    if not len(present):
        return None
    return PrototypeGroup.make(None, sums[present] / shots[present, None], present, n_classes)


def calibrate(scores: dict[int, np.ndarray], support: SupportSet, limit: float, step: float,
              shrink: float, objective: str = "pooled") -> Calibration:
    """Per class, the offset of :func:`choose_offset` on the held-out `scores` (slice -> (K + 1, H, W), see
    :func:`held_out_scores`) against the signed slices' targets, shrunk by n / (n + shrink); 0 for a class shown
    on fewer than 2 signed slices."""
    grid = offset_grid(limit, step)
    result = Calibration()
    for k, class_id in enumerate(support.class_ids, start=1):
        shown = [s for s in support.slice_indices if (support.targets[s] == k).any()]
        result.shown[int(class_id)] = len(shown)
        if len(shown) < 2:
            result.offsets[int(class_id)] = 0.0
            continue
        margins, positives = [], []
        for s, sc in scores.items():
            target = support.targets[s]
            valid = target != IGNORE
            rivals = np.delete(sc, k, axis=0).max(0)
            margins.append((sc[k] - rivals)[valid])
            positives.append((target == k)[valid])
        offset, before, after = choose_offset(margins, positives, grid, objective)
        result.offsets[int(class_id)] = round(offset * len(shown) / (len(shown) + shrink), 6)
        result.loo_dice[int(class_id)] = (before, after)
    return result


def run_calibration(segmenter, support: SupportSet, params) -> Calibration:
    """Held-out scores of the signed slices of `segmenter`'s image (its features computed), then :func:`calibrate`
    with FineTuneParams `params` (calibrate_range, calibrate_step, calibrate_shrink)."""
    groups = segmenter._groups(support)
    scores = held_out_scores(segmenter, support, groups)
    return calibrate(scores, support, params.calibrate_range, params.calibrate_step, params.calibrate_shrink,
                     params.calibrate_objective)


def describe(calibration: Calibration, names: dict[int, str] | None = None) -> str:
    """e.g. "calibrated 1 +0.030, 4 0.000" (class names where given)."""
    names = names or {}
    parts = [f"{names.get(c, c)} {o:+.3f}" if o else f"{names.get(c, c)} 0.000" for c, o in calibration.offsets.items()]
    return "calibrated " + ", ".join(parts)
