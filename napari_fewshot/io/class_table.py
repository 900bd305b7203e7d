"""Class names and colours of a label mask (kept inside a DICOM SEG, else in a sidecar: :mod:`.sidecar`).

    table = ClassTable({1: "liver", 2: "spleen"}, {1: (0.95, 0.15, 0.15, 1.0)})
    table.to_json()     # {"format": "napari-fewshot labels", "version": 1, "classes": [{"id", "name", "colour"}]}

The entries are those of a prototype bank's ``classes`` (:mod:`napari_fewshot.core.bank`): ``{"id", "name",
"colour"}``, colours RGBA in [0, 1] (or None). A DICOM SEG keeps them inside the file (segment label and
recommended display colour); NIfTI, TIFF, PNG and NPY masks get the sidecar, written by
:func:`napari_fewshot.io.writers.write_mask` with the mask's own overwrite rule and read by the napari reader.
This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ReadError

SIDECAR_FORMAT = "napari-fewshot labels"
Colour = tuple[float, float, float, float]


def rgba(value) -> Colour:
    """RGB or RGBA, in [0, 1] or 0-255, as RGBA in [0, 1] (the bank's convention); ValueError otherwise."""
    values = [float(v) for v in value]
    if len(values) not in (3, 4) or not all(np.isfinite(values)):
        raise ValueError(f"a class colour must be RGB or RGBA numbers, not {value!r}")
    scale = 255.0 if max(values) > 1.0 else 1.0
    values = [v / scale for v in values] + ([] if len(values) == 4 else [1.0])
    return tuple(min(max(v, 0.0), 1.0) for v in values)


@dataclass(frozen=True)
class ClassTable:
    """names: label value -> name; colours: label value -> RGBA in [0, 1] (values without one: the viewer's)."""

    names: dict[int, str] = field(default_factory=dict)
    colours: dict[int, Colour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", {int(k): str(v) for k, v in self.names.items() if int(k) > 0})
        object.__setattr__(self, "colours", {int(k): rgba(v) for k, v in self.colours.items()
                                             if v is not None and int(k) > 0})

    def __bool__(self) -> bool:
        return bool(self.names or self.colours)

    @property
    def values(self) -> list[int]:
        """Every label value named or coloured, sorted."""
        return sorted(set(self.names) | set(self.colours))

    def to_json(self) -> dict:
        return {"format": SIDECAR_FORMAT, "version": 1,
                "classes": [{"id": v, "name": self.names.get(v),
                             "colour": list(self.colours[v]) if v in self.colours else None} for v in self.values]}

    @classmethod
    def from_json(cls, data: dict, source: str | os.PathLike = "the label table") -> "ClassTable":
        """The table of :meth:`to_json`; ReadError (one sentence) for anything else."""
        try:
            if data.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"it is not a {SIDECAR_FORMAT} file")
            classes = data["classes"]
            return cls({int(c["id"]): c["name"] for c in classes if c.get("name") is not None},
                       {int(c["id"]): c["colour"] for c in classes if c.get("colour") is not None})
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ReadError(f"Cannot read the class names in '{source}': {exc}.") from exc


__all__ = ["ClassTable", "Colour", "SIDECAR_FORMAT", "rgba"]
