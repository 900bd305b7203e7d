"""What the user painted -> which slices are support and what each pixel is meant to be."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import FewShotError

IGNORE = -1  # target value for pixels that say nothing (unpainted pixels in scribble mode)


@dataclass
class SupportSet:
    """The painted support, ready for prototype pooling.

    class_ids: the label values that are classes, sorted; class index k (1..K) is class_ids[k - 1].
    targets:   slice index -> (H, W) int16 with 0 = background, k = class index, -1 = ignore.
    """

    class_ids: list[int]
    targets: dict[int, np.ndarray]

    @property
    def slice_indices(self) -> list[int]:
        return sorted(self.targets)

    @property
    def n_classes(self) -> int:
        """Number of foreground classes K (background not counted)."""
        return len(self.class_ids)


def as_label_array(labels: np.ndarray, what: str = "The support") -> np.ndarray:
    """Check a painted label map is integral and return it as int64 (same shape)."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise FewShotError(f"{what} must hold whole-number labels, but it has fractional or NaN values.")
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise FewShotError(f"{what} must be a label map of integers, not {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise FewShotError(f"{what} has negative label values; labels must be 0 (unpainted) or positive.")
    return labels.astype(np.int64, copy=False)


def label_values(plane: np.ndarray) -> np.ndarray:
    """The distinct values of a non-negative integer label map, ascending (np.unique's): counted by np.bincount
    where they are small (~10x faster on an image: parse_support runs at every segment), else np.unique."""
    top = int(plane.max()) if plane.size else 0
    return np.flatnonzero(np.bincount(plane.ravel(), minlength=1)) if top < 1 << 16 else np.unique(plane)


def parse_support(
    labels: Sequence[np.ndarray],
    mode: str = "dense",
    background_label: int | None = None,
    empty_slices: Sequence[int] = (),
) -> SupportSet:
    """Read the support semantics out of a painted label stack.

    labels: (S, H, W) array, or a sequence of S (H_i, W_i) label maps (an image set).
    dense:    a slice with any non-zero label is a support slice; its unpainted pixels are background.
    scribble: `background_label` marks background explicitly; unpainted pixels are ignored; a slice
              is a support slice when it has any paint (background included).
    empty_slices: slices the user checked and found free of every class ("no organ here", e.g. a
              correction that erased a false positive): each is a support slice whose every pixel is
              background, unless it has paint (then the paint counts).
    """
    painted: dict[int, np.ndarray] = {}
    for index in range(len(labels)):
        if not np.any(labels[index]):
            continue  # unpainted: nothing to check or convert (most slices of a big volume)
        plane = as_label_array(labels[index])
        if plane.ndim != 2:
            raise FewShotError(f"Support slice {index} should be 2D, but it has shape {plane.shape}.")
        if plane.any():
            painted[index] = plane
    if not painted:
        raise FewShotError("The support has no painted pixels; paint at least one class on one slice.")
    values = sorted({int(v) for plane in painted.values() for v in label_values(plane)} - {0})
    if mode == "scribble":
        if background_label not in values:
            raise FewShotError(
                f"Scribble mode needs background painted with label {background_label}; none was found."
            )
        values.remove(background_label)
    if not values:
        raise FewShotError("The support has only background painted; paint at least one class.")
    index_of = {value: k + 1 for k, value in enumerate(values)}
    targets = {}
    for index in empty_slices:
        if not 0 <= int(index) < len(labels):
            raise FewShotError(f"Empty slice {index} is outside the support's slices 0-{len(labels) - 1}.")
        if int(index) not in painted:
            targets[int(index)] = np.zeros(np.shape(labels[int(index)]), dtype=np.int16)
    for index, plane in painted.items():
        target = np.full(plane.shape, IGNORE if mode == "scribble" else 0, dtype=np.int16)
        if mode == "scribble":
            target[plane == background_label] = 0
        for value, k in index_of.items():
            target[plane == value] = k
        targets[index] = target
    return SupportSet(class_ids=values, targets=targets)


def require_unpainted(support_set: SupportSet, n_slices: int, support_mode: str) -> None:
    """Refuse, before any features are computed, to segment every slice of ``n_slices`` when in dense mode each
    is a support slice already (nothing would be left to predict)."""
    if support_mode == "dense" and len(support_set.slice_indices) == n_slices:
        raise FewShotError(
            "Every slice is painted, so nothing is left to segment; leave some slices unpainted, "
            "or use scribble mode to have painted slices completed."
        )


def label_dtype(class_ids: Sequence[int]) -> np.dtype:
    """Smallest unsigned dtype that holds every class label value."""
    top = max(class_ids, default=0)
    return np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
