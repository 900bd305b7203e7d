"""Propose and select (as Matcher and PerSAM do): on a 2D image, LiteMedSAM draws several candidate objects of
a class and the one most like the support's painted objects is kept.

    boxes = propose_boxes(margin, coarse, profile, peaks=3)      # (N, 4) x0, y0, x1, y1
    mask = select_object(margin, coarse, decode, profile)         # (H, W) bool, or None: nothing to draw

Candidates come from the class's similarity map: the boxes of the connected components the prototypes
predicted (what refine draws without selection) and, around each of the strongest peaks of the map, a box of
the support objects' typical size. LiteMedSAM's decoder draws each (one batched call on the image's cached
embedding) and core/candidate_score.py's prototype_contrast scores them; the best is kept.

select_object is the session-8 rule, kept for its tests and the benchmark scripts that reproduce BENCHMARKS.md;
the plugin selects with core/select_objects.py (propose_boxes and decoded_masks from here, another score).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from .candidate_score import SupportProfile, prototype_contrast
from .sam_prompt import box_of, box_region

PEAK_SPACING = 0.1  # two peaks closer than this share of the image's longer side are one


def peak_points(margin: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(H, W) map -> up to `count` (row, col) local maxima, the highest first, at least PEAK_SPACING of the
    image apart, only where the class wins (margin > 0)."""
    if count < 1:
        return []
    size = max(3, int(PEAK_SPACING * max(margin.shape)) | 1)
    smooth = ndimage.uniform_filter(margin.astype(np.float32), size=max(1, size // 3))
    is_peak = (smooth == ndimage.maximum_filter(smooth, size=size)) & (margin > 0)
    rows, cols = np.nonzero(is_peak)
    kept: list[tuple[int, int]] = []
    for i in np.argsort(-smooth[rows, cols], kind="stable"):  # a plateau's cells are one peak
        if all(max(abs(rows[i] - r), abs(cols[i] - c)) > size for r, c in kept):
            kept.append((int(rows[i]), int(cols[i])))
            if len(kept) == count:
                break
    return kept


def centred_box(point: tuple[int, int], size: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """(4,) x0, y0, x1, y1 of a box of (height, width) `size` centred on (row, col) `point`, clipped to `shape`."""
    (row, col), (height, width) = point, size
    return np.array([max(0.0, col - width / 2), max(0.0, row - height / 2),
                     min(shape[1] - 1.0, col + width / 2), min(shape[0] - 1.0, row + height / 2)], np.float32)


def component_masks(coarse: np.ndarray, min_pixels: int, count: int) -> list[np.ndarray]:
    """(H, W) bool -> its `count` largest 8-connected components of at least `min_pixels` pixels."""
    parts, n = ndimage.label(coarse, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    order = [p for p in np.argsort(-sizes, kind="stable") if sizes[p] >= min_pixels][:count]
    return [parts == p + 1 for p in order]


def propose_boxes(margin: np.ndarray, coarse: np.ndarray, profile: SupportProfile | None, peaks: int = 3,
                  components: int = 3, min_pixels: int = 64, box_margin: float = 0.1,
                  box_margins: Sequence[float] = (), peak_sizes: Sequence[float] = (1.0,),
                  top_areas: Sequence[float] = (), large_peaks: int | None = None) -> np.ndarray:
    """Candidate boxes of one class on one image.

    margin: (H, W) class similarity minus the best other class's; coarse: (H, W) bool, where the prototypes
    predict the class. Returns (N, 4) float32 boxes: the components' (grown by `box_margin`, or by each of
    `box_margins` when given), then around each of the `peaks` strongest peaks one box per `peak_sizes`
    factor of the profile's typical size (factors above 1 only around the `large_peaks` strongest peaks; None:
    around all), then for each of the two largest components and each `top_areas`
    factor, the box (+10 %) of its cells of highest margin covering that many times the support objects'
    typical area (the component tightened to a lesion's size; none of the last two without a profile).
    """
    parts = component_masks(coarse, min_pixels, components)
    boxes = [box_of(mask, m) for mask in parts for m in (box_margins or (box_margin,))]
    if profile is not None:
        height, width = profile.typical_box(margin.shape)
        boxes += [centred_box(point, (height * s, width * s), margin.shape)
                  for n, point in enumerate(peak_points(margin, peaks)) for s in peak_sizes
                  if s <= 1.0 or large_peaks is None or n < large_peaks]
        typical_area = float(np.exp(profile.log_area.mean())) * margin.size
        for part in parts[:2]:
            values = np.sort(margin[part])
            for factor in top_areas:
                count = int(min(len(values), factor * typical_area))
                if count >= 16:
                    core = component_masks(part & (margin >= values[-count]), 1, 1)
                    boxes += [box_of(core[0], 0.1)] if core else []
    return np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)


def decoded_masks(boxes: np.ndarray, probabilities: np.ndarray) -> list[np.ndarray]:
    """(N, 4) boxes and their (N, H, W) decoded probabilities -> N bool masks: above 0.5, inside the box,
    the largest 8-connected component."""
    out = []
    for box, prob in zip(boxes, probabilities):
        mask = (prob > 0.5) & box_region(box, prob.shape)
        parts = component_masks(mask, 1, 1)
        out.append(parts[0] if parts else mask)
    return out


def select_object(margin: np.ndarray, coarse: np.ndarray,
                  decode: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
                  profile: SupportProfile | None, peaks: int = 3, components: int = 3, min_pixels: int = 64,
                  box_margin: float = 0.1, size_weight: float = 0.1) -> np.ndarray | None:
    """The candidate most like the support (see module doc), or None when there is no candidate.

    decode: (N, 4) boxes, optional (N, H, W) mask prompts -> (N, H, W) probabilities (LiteMedSAM on this
    image). Other arguments as :func:`propose_boxes` and candidate_score.prototype_contrast.
    """
    boxes = propose_boxes(margin, coarse, profile, peaks, components, min_pixels, box_margin)
    if not len(boxes):
        return None
    masks = decoded_masks(boxes, decode(boxes, None))
    scores = [prototype_contrast(mask, margin, profile, size_weight) for mask in masks]
    best = int(np.argmax(scores))
    return masks[best] if np.isfinite(scores[best]) else None
