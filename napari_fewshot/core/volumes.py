"""Per-class volume statistics of a label map: the widget's "Volumes" table and the CSV written beside an
exported mask. The millilitres come from :func:`core.metrics.millilitres`, which batch's ``<class>_ml`` columns
(``pipeline.segment_file``, through :func:`core.metrics.class_volumes`) use too, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import millilitres

CSV_COLUMNS = ("class", "name", "voxels", "volume_ml", "first_slice", "last_slice", "slices",
               "painted_slices", "corrected_slices", "predicted_slices")


@dataclass(frozen=True)
class ClassVolume:
    """One class of a label map.

    voxels: its voxel (pixel) count; ml: its volume in mL, None when the scan states no voxel spacing
    (plain 2D images: report ``voxels`` as a pixel area). first_slice / last_slice: the slices it spans
    (None when absent). painted / corrected / predicted: how many of its slices were painted by the user,
    corrected (painted starting from a prediction), and predicted (no paint on them).
    """

    class_id: int
    name: str
    voxels: int
    ml: float | None
    first_slice: int | None
    last_slice: int | None
    painted: int
    corrected: int
    predicted: int

    @property
    def slices(self) -> int:
        return self.painted + self.corrected + self.predicted

    def row(self) -> dict[str, object]:
        """The CSV row (columns :data:`CSV_COLUMNS`), empty cells for what is not known."""
        return {"class": self.class_id, "name": self.name, "voxels": self.voxels,
                "volume_ml": "" if self.ml is None else f"{self.ml:.4f}",
                "first_slice": "" if self.first_slice is None else self.first_slice,
                "last_slice": "" if self.last_slice is None else self.last_slice, "slices": self.slices,
                "painted_slices": self.painted, "corrected_slices": self.corrected,
                "predicted_slices": self.predicted}

    def describe(self, unit: str = "slice") -> str:
        """One line for the widget: ``liver: 1520.3 mL, slices 69-111 (3 painted, 1 corrected, 39 predicted)``."""
        size = f"{self.ml:.1f} mL" if self.ml is not None else f"{self.voxels} px"
        if self.first_slice is None:
            return f"{self.name}: none"
        span = (f"{unit} {self.first_slice}" if self.first_slice == self.last_slice
                else f"{unit}s {self.first_slice}-{self.last_slice}")
        return (f"{self.name}: {size}, {span} ({self.painted} painted, {self.corrected} corrected, "
                f"{self.predicted} predicted)")


def slice_counts(labels) -> np.ndarray:
    """(S, K) int64: how many pixels of each label value 0..K-1 each slice of ``labels`` holds; labels: ``(S, H, W)``
    (or ``(H, W)``) non-negative integers. Counted one slice at a time: a count over the whole volume at once
    (np.unique, np.bincount) holds the GIL for its whole run, ~100 ms on 512 x 512 x 100, and the widget counts in a
    worker beside the Qt thread, whose window then stalled that long (session 21); between slices other threads run."""
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    rows = [np.bincount(plane.ravel()) if plane.size else np.zeros(1, np.int64) for plane in labels]
    counts = np.zeros((len(rows), max((len(r) for r in rows), default=1)), np.int64)
    for z, row in enumerate(rows):
        counts[z, :len(row)] = row
    return counts


def volume_table(labels, class_ids=None, spacing=None, names: dict[int, str] | None = None, support=None,
                 corrected=()) -> list[ClassVolume]:
    """Statistics of each class of ``labels``.

    labels: ``(S, H, W)`` non-negative integer label map (a 2D image: ``(1, H, W)`` or ``(H, W)``); class_ids: the
    classes to report (absent ones get zeros; None: every class predicted or painted); spacing: voxel size in mm
    along (slice, row, col), None when unknown (then ``ml`` is None); names: class id -> name (``class C``
    otherwise); support: the painted ``(S, H, W)`` labels (None: nothing painted), a slice where the class is
    painted counts as painted, or as corrected when its index is in ``corrected``; the other slices holding the
    class count as predicted.
    """
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    counts = slice_counts(labels)
    paint = None if support is None else slice_counts(np.asarray(support).reshape(labels.shape))
    if class_ids is None:
        class_ids = [c for c in range(1, counts.shape[1]) if counts[:, c].any()]
        class_ids = sorted(set(class_ids) | (set() if paint is None else
                                             {c for c in range(1, paint.shape[1]) if paint[:, c].any()}))
    corrected = set(int(z) for z in corrected)
    table = []
    for c in class_ids:
        c = int(c)
        per_slice = counts[:, c] if c < counts.shape[1] else np.zeros(len(counts), np.int64)
        voxels = int(per_slice.sum())
        painted = set() if paint is None or c >= paint.shape[1] else set(np.flatnonzero(paint[:, c]).tolist())
        shown = set(np.flatnonzero(per_slice).tolist()) | painted
        table.append(ClassVolume(
            class_id=c, name=(names or {}).get(c) or f"class {c}", voxels=voxels,
            ml=millilitres(voxels, spacing) if spacing is not None else None,
            first_slice=min(shown) if shown else None, last_slice=max(shown) if shown else None,
            painted=len(painted - corrected), corrected=len(painted & corrected), predicted=len(shown - painted)))
    return table
