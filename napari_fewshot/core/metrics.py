"""Overlap and distance metrics for label maps (numpy, any dimensionality)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape; 1.0 when both are empty."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = prediction.sum() + truth.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(prediction, truth).sum() / total)


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, class_ids) -> dict[int, float]:
    """Dice of `prediction == c` against `truth == c` for each label value c."""
    return {int(c): dice(prediction == c, truth == c) for c in class_ids}


def millilitres(voxels: int, spacing) -> float:
    """The volume in mL of `voxels` voxels of `spacing` (mm along each axis)."""
    return float(voxels) * (float(np.prod(spacing)) / 1000.0)


def class_volumes(labels: np.ndarray, class_ids, spacing) -> dict[int, tuple[int, float]]:
    """Voxel count and volume in mL of each label value: (S, H, W) labels, spacing in mm."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=max(class_ids, default=0) + 1)
    return {int(c): (int(counts[c]), millilitres(counts[c], spacing)) for c in class_ids}


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing=None) -> float:
    """95th percentile symmetric surface distance in the units of `spacing` (voxels by default).

    NaN when either mask is empty (the distance is undefined). Uses distance transforms, so it costs
    about as much as two passes over the volume.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if not prediction.any() or not truth.any():
        return float("nan")
    spacing = np.ones(prediction.ndim) if spacing is None else np.asarray(spacing, float)

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    to_truth = ndimage.distance_transform_edt(~surface(truth), sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)
    distances = np.concatenate([to_truth[surface(prediction)], to_pred[surface(truth)]])
    return float(np.percentile(distances, 95))
