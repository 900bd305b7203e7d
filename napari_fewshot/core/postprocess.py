"""3D consistency of a volume's segmentation, and the 2D clean-up of independent images.

Three cheap steps, each a function of plain arrays so they are usable (and testable) on their own:

- :func:`smooth_similarity`: average each class's score map with its neighbouring slices (a Gaussian
  along the slice axis, on the coarse feature-cell grid, before upsampling), so one slice's noise
  does not decide it alone.
- :func:`limit_beyond_support`: an organ seen on painted slices ends somewhere past the outermost
  painted slice; walking outward, a slice may only keep a class where the previous slice had it
  (dilated by a few pixels). Organs narrow towards their ends, so this stops the class from being
  hallucinated on slices where the organ is absent (the far side of a CT that spans pelvis to chest).
  Where the organ ends against a larger neighbour (a kidney against the spleen or liver), the prediction
  there is the neighbour, and its part inside the previous slice would continue as a tube of the organ's
  shape: a slice whose predicted object is more than `detach` times the part that continues the previous
  slice ends the walk there (BENCHMARKS.md, issue 21, session 12).
- :func:`keep_connected`: per class, keep only the 3D connected components that touch what was
  painted for that class, or, with no paint in this volume (prototypes from a bank, from another
  scan), the largest component: the organ is one body, and what a bank confuses with it (a liver
  tip for a spleen, bowel) is smaller and elsewhere (BENCHMARKS.md, across protocol). Before that, a
  bank's priors (core/bank_priors.py) remove what lies where its classes were not.

A 2D image (one image, or each image of an image set such as BUSI) is independent of the others:
:func:`keep_largest_per_image` keeps each class's largest connected component in it (a lesion is
one blob). FewShotSegmenter runs these steps the same way for paint and for a bank (core/finishing.py).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def limit_beyond_support(mask: np.ndarray, painted: Sequence[int], grow: int = 3, detach: float = 0.0) -> np.ndarray:
    """Keep a class on slices beyond the painted ones only where it continues the previous slice.

    mask: (S, H, W) bool prediction of one class; painted: slice indices where the class was painted
    (no painted slice: mask returned unchanged). Walking from the lowest painted slice down to 0
    (and from the highest up to S-1), slice i keeps mask[i] & dilate(kept[i -/+ 1], grow pixels).
    detach (0: off): slice i keeps nothing, and so neither do the slices past it, when the 2D components
    (face connectivity) of mask[i] that reach into that allowed region are more than `detach` times the
    part of them inside it: the object predicted there is mostly outside the organ's last cross-section,
    i.e. another, larger structure. Slices between the painted ones are not touched.
    """
    painted = sorted(int(p) for p in painted)
    if not painted:
        return mask
    out = mask.copy()
    disk = _disk(grow) if grow > 0 else None

    def walk(start: int, stop: int, step: int) -> None:
        for i in range(start + step, stop, step):
            previous = out[i - step]
            if not previous.any():
                out[i] = False
                continue
            allowed = ndimage.binary_dilation(previous, disk) if disk is not None else previous
            if detach and detached(out[i], allowed, detach):
                out[i] = False
                continue
            out[i] &= allowed

    walk(painted[0], -1, -1)
    walk(painted[-1], len(mask), 1)
    return out


def detached(plane: np.ndarray, allowed: np.ndarray, ratio: float) -> bool:
    """Whether the (H, W) bool `plane`'s components that overlap `allowed` are more than `ratio` times their
    overlap with it (nothing overlaps: False, the limit alone empties the plane)."""
    inside = plane & allowed
    kept = int(inside.sum())
    if kept == 0 or int(plane.sum()) <= ratio * kept:  # the components are part of the plane: no labelling needed
        return False
    parts, _ = ndimage.label(plane)
    touched = np.unique(parts[inside])
    return int(np.isin(parts, touched[touched > 0]).sum()) > ratio * kept


def keep_connected(mask: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """Keep the 3D connected components of `mask` (face connectivity) that touch `seeds`.

    mask, seeds: (S, H, W) bool. Without seeds, or when none touches the mask, the largest component is kept.
    """
    window = bounding_window(mask)
    if window is None:
        return mask
    labelled, n = ndimage.label(mask[window])  # its bounding box only: the same components in the same order
    if n <= 1:
        return mask
    keep = None
    if seeds is not None and seeds.any():
        touched = np.unique(labelled[seeds[window] & mask[window]])
        touched = touched[touched > 0]
        if len(touched):
            keep = np.zeros(n + 1, bool)
            keep[touched] = True
    if keep is None:
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        keep = np.arange(n + 1) == int(np.argmax(sizes))
    out = np.zeros(mask.shape, bool)
    out[window] = keep[labelled]  # a lookup, not np.isin
    return out


def bounding_window(mask: np.ndarray) -> tuple[slice, ...] | None:
    """One slice per axis of the bool `mask` ((H, W) or (S, H, W)) bounding its pixels; None when it is empty."""
    window = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(present):
            return None
        window.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(window)


def postprocess_volume(
    labels: np.ndarray,
    class_ids: Sequence[int],
    painted: Mapping[int, Sequence[int]] | None = None,
    seeds: Mapping[int, np.ndarray] | None = None,
    grow: int = 3,
    connected: bool = True,
    limit: bool = True,
    detach: float = 0.0,
) -> np.ndarray:
    """3D consistency of a multi-class label volume; removed voxels become background (0).

    labels: (S, H, W) integer; class_ids: the label values to clean; painted: class -> painted slice
    indices (for the beyond-support limit); seeds: class -> (S, H, W) bool of painted voxels (for the
    connected-component choice); grow, detach: of :func:`limit_beyond_support`. Returns a new array of labels'
    dtype.
    """
    labels = np.asarray(labels)
    out = labels.copy()
    painted = painted or {}
    seeds = seeds or {}
    for c in class_ids:
        mask = labels == c
        if not mask.any():
            continue
        kept = mask
        if limit and painted.get(c):
            kept = limit_beyond_support(kept, painted[c], grow, detach)
        if connected:
            kept = keep_connected(kept, seeds.get(c))
        out[mask & ~kept] = 0
    return out


def smooth_similarity(maps: Mapping[int, np.ndarray], sigma: float) -> dict[int, np.ndarray]:
    """Smooth per-slice class similarity maps along the slice axis (normalised convolution).

    maps: slice index -> (K + 1, h, w) float (slices may be missing, e.g. painted ones: only the
    present ones contribute, each weighted by the Gaussian of its distance). Returns the same keys.
    """
    if sigma <= 0 or len(maps) < 2:
        return dict(maps)
    order = sorted(maps)
    first, last = order[0], order[-1]
    shape = next(iter(maps.values())).shape
    stack = np.zeros((last - first + 1,) + tuple(shape), np.float32)
    weight = np.zeros(last - first + 1, np.float32)
    for i in order:
        stack[i - first] = maps[i]
        weight[i - first] = 1.0
    kw = dict(axis=0, mode="constant", cval=0.0, truncate=2.0)
    num = ndimage.gaussian_filter1d(stack, sigma, **kw)
    den = ndimage.gaussian_filter1d(weight, sigma, **kw)
    return {i: num[i - first] / max(float(den[i - first]), 1e-6) for i in order}


def support_hints(targets: Mapping[int, np.ndarray], class_ids: Sequence[int], shape: tuple[int, ...]):
    """From a parsed support (slice -> (H, W) target with class indices 1..K): painted slices per label
    value and a (S, H, W) bool seed mask per label value, as :func:`postprocess_volume` takes them."""
    painted: dict[int, list[int]] = {}
    seeds: dict[int, np.ndarray] = {}
    for k, c in enumerate(class_ids, start=1):
        seed = np.zeros(shape, bool)
        for i, target in targets.items():
            hit = np.asarray(target) == k
            if hit.any():
                seed[i] = hit
                painted.setdefault(c, []).append(int(i))
        seeds[c] = seed
    return painted, seeds


def keep_largest_per_image(labels, class_ids: Sequence[int], indices: Sequence[int]):
    """In place: in each image `labels[i]` (i in `indices`), keep only the largest 2D connected component
    (face connectivity) of every class; the rest becomes background (0).

    labels: an (S, H, W) array or a list of (H_i, W_i) arrays. Returns `labels`.
    """
    for i in indices:
        image = labels[i]
        for c in class_ids:
            mask = image == c
            if mask.any():
                image[mask & ~keep_connected(mask)] = 0
    return labels


PREVIEW_REACH = 5  # slices: how near a painted slice a class must be for the visible slice's preview to show it


def near_paint(plane: np.ndarray, index: int, targets: Mapping[int, np.ndarray], class_ids: Sequence[int],
               reach: int = PREVIEW_REACH) -> np.ndarray:
    """A volume's visible slice previewed before the 3D clean-up: (H, W) labels of slice `index` (label values)
    -> the same, less every class painted on no slice within `reach` of it (0 there).

    Slice by slice the coarse matching draws organ-like tissue everywhere; the 3D clean-up keeps only what
    connects to the paint. On the CT sample (liver and spleen painted on slices 92 and 102) the per-slice preview
    of slices 0-72 drew 226-1,490 liver pixels where the whole volume's result has none, while within 5 slices of
    the paint 80-99 % of what it drew is in the result (benchmarks/results/s16_lead/preview_near_paint.txt).
    targets: SupportSet.targets (slice -> (H, W) class indices 1..K, 0 background, -1 ignore); class_ids: label
    value of class index k at k - 1."""
    keep = {0}
    for z, target in targets.items():
        if abs(z - index) <= reach:
            keep.update(class_ids[k - 1] for k in np.unique(target) if k > 0)
    return np.where(np.isin(plane, sorted(keep)), plane, 0).astype(plane.dtype, copy=False)
