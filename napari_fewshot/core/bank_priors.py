"""What a bank knows about where its classes are, and how a scan with no paint uses it.

A bank's prototypes say what a class looks like; painted support also said where it was. A bank
applied to a scan with no paint (another patient, or the same scan opened again) keeps that second
part as priors, one :class:`ClassPrior` per class, measured on its support slices:

- ``z``: where along the body the class was painted: the relative positions (0 the first slice of the
  body, 1 the last) of its lowest and highest support slices;
- ``centre`` / ``spread``: where in the plane, as the centroid of its paint inside the body's bounding box
  (y, x in [0, 1]), the mean over its support slices and their spread;
- ``area``: its painted area per slice as a fraction of the body's area.

:func:`apply_priors` (core/finishing.finish_result, for prototypes without paint) removes, per class, the
2D pieces far from where the class was in the plane, the slices far from where it was along the body
(only when the whole scan was segmented with one prototype set: a plan of slice ranges already says
where), and then the 3D clean-up keeps the largest component of what is left. The body is found by
thresholding air: pixels above AIR of the windowed slice (core/stack.py), its box from the 1st to the
99th percentile of their coordinates (robust to noise outside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

AIR = 0.05           # windowed intensity in [0, 1] below which a pixel is air (CT window: about -150 HU)
Z_MARGIN = 1.0       # a class may extend this fraction of its support's z-span beyond its outermost support slices
Z_MARGIN_MIN = 0.15  # ... and at least this fraction of the body's z extent
Z_MIN_SLICES = 8     # a body over fewer slices than this (a slab, a toy stack) says too little about "along the body"
PLANE_TOLERANCE = 0.25  # a 2D piece whose centroid is farther than this (box units) plus the spread is dropped
PLANE_BOOST = 0.06   # cosine similarity added to a class at its centre, fading as a Gaussian of ...
PLANE_SIGMA = 0.1    # ... this width (box units): across 0.653 -> 0.716 (BENCHMARKS.md, bank priors),
LEVEL_SPAN = 0.05    # ... in full when the scan's level is this far below the support's (none when not below)


@dataclass
class ClassPrior:
    """Where one class was on its support. z: (lowest, highest) relative slice position of its support
    slices; centre, spread: (y, x) centroid in the body's box, mean and standard deviation over its support
    slices; area: painted pixels per slice over the body's pixels (mean); slices: support slices measured;
    level: its heatmap level on its own support, held out (:func:`support_levels`), or None."""

    z: tuple[float, float]
    centre: tuple[float, float]
    spread: tuple[float, float]
    area: float
    slices: int
    level: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"z": list(self.z), "centre": list(self.centre), "spread": list(self.spread),
               "area": self.area, "slices": self.slices}
        return out if self.level is None else out | {"level": self.level}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ClassPrior":
        level = values.get("level")
        return cls(tuple(float(v) for v in values["z"]), tuple(float(v) for v in values["centre"]),
                   tuple(float(v) for v in values["spread"]), float(values["area"]), int(values["slices"]),
                   None if level is None else float(level))


def body_mask(plane: np.ndarray) -> np.ndarray:
    """(H, W) bool: not air. plane: a windowed slice (H, W) or (H, W, 3) in [0, 1]."""
    plane = np.asarray(plane, np.float32)
    return (plane.mean(axis=-1) if plane.ndim == 3 else plane) > AIR


def body_box(plane: np.ndarray) -> tuple[float, float, float, float] | None:
    """(y0, y1, x0, x1) of the body on a windowed slice, or None when it is (nearly) all air."""
    ys, xs = np.nonzero(body_mask(plane))
    if len(ys) < 16:
        return None
    y0, y1 = np.percentile(ys, [1, 99])
    x0, x1 = np.percentile(xs, [1, 99])
    return float(y0), float(max(y1, y0 + 1)), float(x0), float(max(x1, x0 + 1))


def body_extent(stack) -> tuple[int, int]:
    """First and last slice of the stack with a body on it (the whole stack when none has)."""
    has = [i for i in range(len(stack)) if body_mask(stack.slice(i)).mean() > 0.02]
    return (has[0], has[-1]) if has else (0, len(stack) - 1)


def relative_z(index: int, extent: tuple[int, int]) -> float:
    lo, hi = extent
    return (index - lo) / max(hi - lo, 1)


def relative_centre(mask: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Centroid (y, x) of a 2D mask inside a body box, in box units."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = box
    return (float(ys.mean()) - y0) / (y1 - y0), (float(xs.mean()) - x0) / (x1 - x0)


def measure(stack, targets: Mapping[int, np.ndarray], class_ids: Sequence[int]) -> dict[int, list[tuple]]:
    """Per class id, one (relative z, centre y, centre x, area fraction) per support slice showing it.

    stack: core/stack.ImageStack (a volume); targets: support slice -> (H, W) int with class index k
    (1..K, class_ids[k - 1]), 0 background, -1 unlabelled. Slices that are all air are skipped; 2D images
    (an image set, a single slice) have no body to be along: nothing."""
    if not stack.is_volume or len(stack) < 2:
        return {}
    extent = body_extent(stack)
    out: dict[int, list[tuple]] = {}
    for i, target in targets.items():
        target = np.asarray(target)
        body = body_mask(stack.slice(i))
        box = body_box(stack.slice(i))
        if box is None:
            continue
        for k, c in enumerate(class_ids, start=1):
            mask = target == k
            if mask.any():
                cy, cx = relative_centre(mask, box)
                out.setdefault(int(c), []).append((relative_z(i, extent), cy, cx, mask.sum() / max(body.sum(), 1)))
    return out


def combine(measurements: Sequence[Mapping[int, list[tuple]]]) -> dict[int, ClassPrior]:
    """ClassPrior per class from :func:`measure` of one or more painted scans (their slices pooled)."""
    pooled: dict[int, list[tuple]] = {}
    for one in measurements:
        for c, rows in one.items():
            pooled.setdefault(int(c), []).extend(rows)
    out = {}
    for c, rows in pooled.items():
        values = np.array(rows, np.float64)
        out[c] = ClassPrior((float(values[:, 0].min()), float(values[:, 0].max())),
                            (float(values[:, 1].mean()), float(values[:, 2].mean())),
                            (float(values[:, 1].std()), float(values[:, 2].std())), float(values[:, 3].mean()),
                            len(rows))
    return out


def support_levels(features: Sequence[torch.Tensor], targets: Sequence[np.ndarray], slice_ids: Sequence[int],
                   prototypes) -> dict[int, float]:
    """Class id -> its heatmap level on its own support: the median, over the feature cells of its paint
    where it wins, of its similarity to the prototypes of the *other* support slices (and the global ones).

    features: (C, h, w) per support slice; targets: (H, W) ints per slice (class index k, 0 background, -1
    unlabelled); slice_ids: each slice's id as `prototypes.origins` names it; prototypes: the PrototypeSet.
    A class painted on one slice only is measured against the global prototypes (its own slice's mean among
    them). What a scan with no paint scores lower than this is a scan unlike the support (another patient)."""
    from .predict import class_similarity
    from .prototypes import PrototypeSet

    origin = prototypes.origins[:, 0].cpu() if prototypes.origins is not None else None
    scores: dict[int, list[np.ndarray]] = {}
    for feature, target, sid in zip(features, targets, slice_ids):
        keep = torch.ones(len(prototypes.vectors), dtype=torch.bool) if origin is None else origin != int(sid)
        keep |= prototypes.is_global.cpu()
        held = PrototypeSet(prototypes.vectors.cpu()[keep], prototypes.owner.cpu()[keep],
                            prototypes.is_global.cpu()[keep],
                            list(prototypes.class_ids), dict(prototypes.counts))
        with torch.no_grad():
            sim = class_similarity(feature.float().cpu()[None], held)[0].numpy()
        h, w = sim.shape[1:]
        target = np.asarray(target)
        rows = ((np.arange(h) + 0.5) * target.shape[0] / h).astype(int)
        cols = ((np.arange(w) + 0.5) * target.shape[1] / w).astype(int)
        cells = target[rows][:, cols]
        wins = sim.argmax(0)
        for k, c in enumerate(prototypes.class_ids, start=1):
            hit = (cells == k) & (wins == k)
            if hit.any():
                scores.setdefault(int(c), []).append(sim[k][hit])
    return {c: float(np.median(np.concatenate(v))) for c, v in scores.items()}


def with_levels(priors: Mapping[int, ClassPrior], levels: Mapping[int, float]) -> dict[int, ClassPrior]:
    """The priors with each class's support level (:func:`support_levels`) set."""
    from dataclasses import replace

    return {c: replace(p, level=levels.get(c)) for c, p in priors.items()}


def class_priors(stack, targets: Mapping[int, np.ndarray], class_ids: Sequence[int]) -> dict[int, ClassPrior]:
    """Priors of each class from one scan's support (see :func:`measure`); classes never painted get none."""
    return combine([measure(stack, targets, class_ids)])


def z_window(prior: ClassPrior) -> tuple[float, float]:
    """The relative slice positions a class may occupy: its support's, widened by Z_MARGIN of their span
    (at least Z_MARGIN_MIN) on each side (an organ extends past its outermost painted slices)."""
    lo, hi = prior.z
    margin = max(Z_MARGIN * (hi - lo), Z_MARGIN_MIN)
    return lo - margin, hi + margin


def plane_boost(scores: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                class_priors_: Sequence[ClassPrior | None], weights: Sequence[float] | None = None) -> np.ndarray:
    """Coarse scores (K + 1, h, w) with each class k's (prior k - 1, None: none) raised by PLANE_BOOST (times
    weights[k - 1], default 1) at its centre, fading as a Gaussian of PLANE_SIGMA; box: the body's box on
    the (H, W) = size slice."""
    out = np.array(scores, np.float32, copy=True)
    h, w = out.shape[1:]
    y0, y1, x0, x1 = box
    ys = ((np.arange(h) + 0.5) * size[0] / h - y0) / (y1 - y0)
    xs = ((np.arange(w) + 0.5) * size[1] / w - x0) / (x1 - x0)
    for k, prior in enumerate(class_priors_, start=1):
        if prior is not None:
            d2 = (ys[:, None] - prior.centre[0]) ** 2 + (xs[None, :] - prior.centre[1]) ** 2
            weight = 1.0 if weights is None else weights[k - 1]
            out[k] += PLANE_BOOST * weight * np.exp(-d2 / (2 * PLANE_SIGMA ** 2))
    return out


def boost_weights(coarse: Mapping[int, np.ndarray], ordered: Sequence[ClassPrior | None],
                  boxes: Mapping[int, tuple | None], size: tuple[int, int]) -> list[float]:
    """Per class (in coarse's order 1..K), how much of PLANE_BOOST it gets: 1 when its level on this scan
    is LEVEL_SPAN or more below its support's level, 0 when not below (the same scan, a scan like the
    support: nothing to help), linear between; 1 without a level. Its level on this scan is the median of
    its coarse score over the cells where it wins within PLANE_TOLERANCE (plus spread) of its centre
    (what it wins far away is not the organ). boxes: slice -> body box; size: the slices' (H, W)."""
    sums: list[list[np.ndarray]] = [[] for _ in ordered]
    for i, scores in coarse.items():
        box = boxes.get(i)
        if box is None:
            continue
        h, w = scores.shape[1:]
        ys = ((np.arange(h) + 0.5) * size[0] / h - box[0]) / (box[1] - box[0])
        xs = ((np.arange(w) + 0.5) * size[1] / w - box[2]) / (box[3] - box[2])
        wins = scores.argmax(0)
        for k, prior in enumerate(ordered, start=1):
            if prior is not None and prior.level is not None:
                near = np.hypot(ys[:, None] - prior.centre[0], xs[None, :] - prior.centre[1]) \
                    <= PLANE_TOLERANCE + float(np.hypot(*prior.spread))
                sums[k - 1].append(scores[k][(wins == k) & near])
    out = []
    for k, prior in enumerate(ordered, start=1):
        if prior is None or prior.level is None:
            out.append(1.0 if prior is not None else 0.0)
            continue
        values = np.concatenate(sums[k - 1]) if sums[k - 1] else np.zeros(0)
        level = float(np.median(values)) if len(values) else -1.0
        out.append(float(np.clip((prior.level - level) / LEVEL_SPAN, 0.0, 1.0)))
    return out


def boosted_labels(labels: np.ndarray, class_ids: Sequence[int], priors: Mapping[int, ClassPrior], stack,
                   coarse: Mapping[int, np.ndarray]) -> np.ndarray:
    """(S, H, W) labels with the slices of `coarse` (slice -> (K + 1, h, w) class scores) labelled again from
    their scores raised by :func:`plane_boost` (weighted by :func:`boost_weights`): a new array; slices not in
    `coarse`, and all of them when no class has a prior or no weight is above 0, are copied as they are."""
    from .predict import labels_from_scores

    out = np.array(labels, copy=True)
    ordered = [priors.get(int(c)) for c in class_ids]
    if not coarse or all(p is None for p in ordered):
        return out
    lut = np.array([0] + [int(c) for c in class_ids], out.dtype)
    boxes = {i: body_box(stack.slice(i)) for i in coarse}
    weights = boost_weights(coarse, ordered, boxes, out.shape[1:])
    if not any(weights):
        return out
    for i, scores in coarse.items():
        if boxes[i] is not None:
            boosted = plane_boost(scores, boxes[i], out.shape[1:], ordered, weights)
            out[i] = lut[labels_from_scores(torch.from_numpy(boosted), out.shape[1:])[0]]
    return out


def apply_priors(labels: np.ndarray, class_ids: Sequence[int], priors: Mapping[int, ClassPrior], stack,
                 segmented: Sequence[int], coarse: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Labels without what lies where the bank's classes were not: a new (S, H, W) array, removed voxels 0.

    labels: (S, H, W) ints of a volume segmented with no paint; priors: class id -> ClassPrior (classes
    without one are left alone); stack: the volume's core/stack.ImageStack; segmented: the slices that
    were segmented; coarse: their slice -> (K + 1, h, w) class scores, to label them again with
    :func:`plane_boost` (a class is likelier where it was; None keeps the labels, e.g. once LiteMedSAM
    redrew them). Then, per class, every 2D connected piece whose centroid lies farther from the prior's
    centre than PLANE_TOLERANCE plus the prior's spread (body-box units) is removed; when every slice
    was segmented (one prototype set for the whole scan, not a plan of slice ranges, which already says
    where), so is the class on slices outside :func:`z_window`.
    """
    wanted = [int(c) for c in class_ids if int(c) in priors]
    if not wanted:
        return np.array(labels, copy=True)
    out = boosted_labels(labels, class_ids, priors, stack, coarse) if coarse else np.array(labels, copy=True)
    along = len(set(int(i) for i in segmented)) == len(out)
    extent = body_extent(stack) if along else (0, len(out) - 1)
    along = along and extent[1] - extent[0] + 1 >= Z_MIN_SLICES
    for i in range(len(out)):
        present = [c for c in wanted if (out[i] == c).any()]
        if not present:
            continue
        box = body_box(stack.slice(i))
        for c in present:
            prior = priors[c]
            if box is None:
                continue
            if along:
                lo, hi = z_window(prior)
                if not lo <= relative_z(i, extent) <= hi:
                    out[i][out[i] == c] = 0
                    continue
            pieces, n = ndimage.label(out[i] == c)
            limit = PLANE_TOLERANCE + float(np.hypot(*prior.spread))
            for j in range(1, n + 1):
                piece = pieces == j
                cy, cx = relative_centre(piece, box)
                if np.hypot(cy - prior.centre[0], cx - prior.centre[1]) > limit:
                    out[i][piece] = 0
    return out
