"""Class names and colours of a label mask, and the sidecar ``STEM.labels.json`` that keeps them beside it.

    table = ClassTable({1: "liver", 2: "spleen"}, {1: (0.95, 0.15, 0.15, 1.0)})
    sidecar_path("out/ct_mask.nii.gz")       # out/ct_mask.labels.json
    sidecar_path("out/ct_mask.png")          # out/ct_mask.labels.json (beside the folder of PNG slices)
    read_sidecar("out/ct_mask.nii.gz")       # the ClassTable written with it, or None

The entries are those of a prototype bank's ``classes`` (:mod:`napari_fewshot.core.bank`): ``{"id", "name",
"colour"}``, colours RGBA in [0, 1] (or None). A DICOM SEG keeps them inside the file (segment label and
recommended display colour); NIfTI, TIFF, PNG and NPY masks get the sidecar, written by
:func:`napari_fewshot.io.writers.write_mask` with the mask's own overwrite rule and read by the napari reader.
This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ReadError

SIDECAR_SUFFIX = ".labels.json"
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


def sidecar_path(mask_path: str | os.PathLike) -> Path:
    """``STEM.labels.json`` beside the mask ``STEM.EXT`` (for a PNG set, beside its folder ``STEM``)."""
    from .naming import split_extension

    mask_path = Path(mask_path)
    stem, extension = split_extension(mask_path.name)
    return mask_path.with_name((stem if extension else mask_path.stem) + SIDECAR_SUFFIX)


def is_ours(path: str | os.PathLike) -> bool:
    """True when `path` is a sidecar this tool wrote (so replacing or removing it loses nothing of the user's)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("format") == SIDECAR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def sidecar_bytes(table: ClassTable) -> bytes:
    return (json.dumps(table.to_json(), indent=1) + "\n").encode("utf-8")


def read_sidecar(mask_path: str | os.PathLike) -> ClassTable | None:
    """The class table beside the mask `mask_path`, or None when there is none (or it is not ours)."""
    path = sidecar_path(mask_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        return None
    return ClassTable.from_json(data, path)


__all__ = ["ClassTable", "SIDECAR_SUFFIX", "is_ours", "read_sidecar", "rgba", "sidecar_bytes", "sidecar_path"]
