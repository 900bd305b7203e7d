"""Per-class volume statistics of a label map: the widget's "Volumes" table and the CSV written beside an
exported mask. The voxel counts and millilitres come from :func:`core.metrics.class_volumes`, the same
function batch uses for its ``<class>_ml`` columns (``pipeline.segment_file``), so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import class_volumes

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


def volume_table(labels, class_ids, spacing=None, names: dict[int, str] | None = None, support=None,
                 corrected=()) -> list[ClassVolume]:
    """Statistics of each class of ``labels``.

    labels: ``(S, H, W)`` integer label map (a 2D image: ``(1, H, W)`` or ``(H, W)``); class_ids: the classes
    to report (absent ones get zeros); spacing: voxel size in mm along (slice, row, col), None when unknown
    (then ``ml`` is None); names: class id -> name (``class C`` otherwise); support: the painted ``(S, H, W)``
    labels (None: nothing painted), a slice where the class is painted counts as painted, or as corrected
    when its index is in ``corrected``; the other slices holding the class count as predicted.
    """
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    support = None if support is None else np.asarray(support).reshape(labels.shape)
    counts = class_volumes(labels, class_ids, spacing if spacing is not None else (1.0, 1.0, 1.0))
    corrected = set(int(z) for z in corrected)
    table = []
    for c in class_ids:
        c = int(c)
        present = np.flatnonzero((labels == c).any(axis=(1, 2)))
        painted = set() if support is None else set(np.flatnonzero((support == c).any(axis=(1, 2))).tolist())
        shown = set(present.tolist()) | painted
        table.append(ClassVolume(
            class_id=c, name=(names or {}).get(c) or f"class {c}", voxels=counts[c][0],
            ml=counts[c][1] if spacing is not None else None,
            first_slice=min(shown) if shown else None, last_slice=max(shown) if shown else None,
            painted=len(painted - corrected), corrected=len(painted & corrected), predicted=len(shown - painted)))
    return table
