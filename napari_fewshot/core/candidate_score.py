"""What the support's painted objects of a class say about a candidate object (propose and select).

    profile = SupportProfile.from_masks([painted lesion masks of the support images])
    score = prototype_contrast(mask, margin, profile)   # higher: stands out in the prototype map, painted size
    like = profile.with_appearance(vectors).likeness(v)  # mean cosine with the painted objects' mean embeddings

Two scores, two different questions, on two different inputs:

- :func:`prototype_contrast` (the session-8 rule of proposals.select_object, kept for its tests and the
  benchmark scripts; the plugin no longer uses it): does the candidate *stand out from its surroundings in the
  prototype similarity map*, and is it of a painted object's size? The class's margin inside the candidate
  minus in the ring around it, minus a size penalty (share of the image, log scale).
- :meth:`SupportProfile.likeness` (half of core/select_objects.py's selection score, the default on 2D
  images): does the candidate *look like what was painted* in LiteMedSAM's embedding? The mean cosine of its
  mean embedding with each painted object's. It has no surroundings and no size: the other half of the
  selection score (embedding contrast with the ring) says whether the outline is an object.

They are not one idea with two implementations: the first is a contrast (candidate against its ring, in the
prototype map), the second a similarity (candidate against the painted objects, in the embedding). Merging them
would mean replacing the default's likeness by a prototype-map contrast, which was the previous, weaker default
(BENCHMARKS.md, "BUSI: propose and select by embedding contrast"), so they stay apart, named for what they measure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

MIN_LOG_AREA_SPREAD = 0.5  # natural-log units: one painted object (or identical ones) still allows ~1.6x either way


@dataclass(frozen=True)
class SupportProfile:
    """The painted objects of one class, as the candidate score needs them.

    log_area: (n,) log of each painted object's area as a share of its image (n painted images).
    box_shape: (n, 2) each painted object's bounding-box (height, width) as a share of its image's.
    appearance: (n, C) each painted object's mean LiteMedSAM image embedding (core/select_objects.py), or None.
    """

    log_area: np.ndarray
    box_shape: np.ndarray
    appearance: np.ndarray | None = None

    def with_appearance(self, vectors: Sequence[np.ndarray]) -> "SupportProfile":
        """This profile with `vectors` ((C,) each: a painted object's mean image embedding) as its appearance."""
        return dataclasses.replace(self, appearance=np.stack([np.asarray(v, np.float64) for v in vectors]))

    def likeness(self, vector: np.ndarray) -> float:
        """How much a candidate looks like the painted objects: the mean cosine of its (C,) mean embedding with
        each painted object's (the appearance rows); 0 without an appearance."""
        if self.appearance is None or not len(self.appearance):
            return 0.0
        v = np.asarray(vector, np.float64)
        rows = self.appearance
        return float(np.mean(rows @ v / np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(v), 1e-12)))

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray]) -> "SupportProfile | None":
        """(H_i, W_i) bool masks of the class on the painted images (empty ones skipped) -> profile, or None
        when no painted image holds the class."""
        areas, shapes = [], []
        for mask in masks:
            mask = np.asarray(mask, bool)
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            areas.append(mask.mean())
            shapes.append(((ys.max() - ys.min() + 1) / mask.shape[0], (xs.max() - xs.min() + 1) / mask.shape[1]))
        if not areas:
            return None
        return cls(np.log(np.asarray(areas, np.float64)), np.asarray(shapes, np.float64))

    def size_deviation(self, area_share: float) -> float:
        """How far an area (share of the image, > 0) lies from the painted ones: |log difference from their
        mean| in units of their spread (at least MIN_LOG_AREA_SPREAD), 0 inside one spread."""
        spread = max(float(self.log_area.std()), MIN_LOG_AREA_SPREAD)
        z = abs(np.log(max(area_share, 1e-6)) - float(self.log_area.mean())) / spread
        return max(0.0, z - 1.0)

    def typical_box(self, shape: tuple[int, int]) -> tuple[float, float]:
        """(height, width) in pixels of a typical painted object's box on an image of (H, W) `shape`."""
        height, width = np.median(self.box_shape, axis=0)
        return float(height * shape[0]), float(width * shape[1])


def ring_contrast(values: np.ndarray, mask: np.ndarray, width: int) -> float:
    """Mean of `values` inside the (H, W) bool `mask` minus their mean over the ring `width` pixels (cells) wide
    around it; 0 when nothing lies around it. values: (H, W) float; `mask` must hold at least one pixel."""
    ring = ndimage.binary_dilation(mask, iterations=width) & ~mask
    return float(values[mask].mean() - values[ring].mean()) if ring.any() else 0.0


def prototype_contrast(mask: np.ndarray, margin: np.ndarray, profile: SupportProfile | None,
                       size_weight: float = 0.1) -> float:
    """How much a candidate stands out in its class's prototype map, at a painted object's size; -inf for an
    empty mask.

    mask:   (H, W) bool candidate on the query image.
    margin: (H, W) float, the class's similarity minus the best other class's (> 0 where the class wins).
    profile: the support's objects (None: no size term).
    Returns mean margin inside the candidate minus mean margin in the ring around it (as wide as a tenth of
    the candidate's size, at least 2 pixels), minus `size_weight` x profile.size_deviation(area share).
    """
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if area == 0:
        return float("-inf")
    width = max(2, int(round(0.1 * np.sqrt(area))))
    score = ring_contrast(margin, mask, width)
    if profile is not None:
        score -= size_weight * profile.size_deviation(area / mask.size)
    return score


# The heatmap's range starts where the support's background stops (this quantile of it) and is full where the
# support's objects are (this quantile of them): the quantiles plugin/layers.heatmap_limits takes on a prediction.
OUTSIDE_LEVEL = 0.95
INSIDE_LEVEL = 0.90


def support_similarity_range(held_out: dict[int, np.ndarray], targets: dict[int, np.ndarray],
                             n_classes: int) -> dict[int, tuple[float, float]]:
    """Each class's similarity levels on the painted images themselves, each matched without its own
    prototypes: one colour range for every image's heatmap, so that a shadow is as bright as it looks to the
    support, whichever image it is on.

    held_out: support slice -> (K + 1, h, w) similarity of that slice to the *other* support slices'
              prototypes (its own cells would match themselves perfectly).
    targets:  support slice -> (h, w) class index per cell (0 background, k = 1..K, -1 unknown), on the same grid.
    Returns class index k -> (low, high): the OUTSIDE_LEVEL quantile of class k's similarity where the
    support is not k, the INSIDE_LEVEL quantile where it is k. Left out: classes painted on fewer than two
    slices (nothing held out), and classes whose painted objects do not reach above their background
    (high <= low: the support cannot set a scale, so the caller keeps its own).
    """
    out = {}
    for k in range(1, n_classes + 1):
        inside = [held_out[i][k][targets[i] == k] for i in held_out]
        outside = [held_out[i][k][(targets[i] != k) & (targets[i] >= 0)] for i in held_out]
        inside, outside = np.concatenate(inside + [np.zeros(0)]), np.concatenate(outside + [np.zeros(0)])
        inside, outside = inside[inside > -1], outside[outside > -1]  # -1: no prototype of k held out
        if not inside.size or not outside.size:
            continue
        low, high = float(np.quantile(outside, OUTSIDE_LEVEL)), float(np.quantile(inside, INSIDE_LEVEL))
        if high > low:
            out[k] = (low, high)
    return out


def held_out_range(groups: Sequence, slices: Sequence[int], load: Callable[[int], "torch.Tensor"],
                   support_set) -> dict[int, tuple[float, float]]:
    """:func:`support_similarity_range` from the support's local prototype groups.

    groups: matching.PrototypeGroup per support slice, slices: the support slice each came from; load: slice
    -> (C, h, w) features; support_set: the support.SupportSet (its targets: slice -> (H, W) class index).
    Returns class label value -> (low, high).
    """
    import torch

    from .matching import group_similarity, matmul_dtype, query_cells
    from .predict import upsample

    targets, class_ids = support_set.targets, support_set.class_ids
    held_out = {}
    for i in sorted(set(slices)):
        others = [g for g, s in zip(groups, slices) if s != i]
        if not others:
            continue
        features = load(i)
        query = query_cells(features, matmul_dtype(features.device.type))
        best = torch.stack([group_similarity(query, g) for g in others]).amax(0)
        grid = best.reshape(best.shape[0], *features.shape[-2:])
        held_out[i] = upsample(grid[None].float().cpu(), targets[i].shape)[0].numpy()
    levels = support_similarity_range(held_out, {i: targets[i] for i in held_out}, len(class_ids))
    return {class_ids[k - 1]: value for k, value in levels.items()}
