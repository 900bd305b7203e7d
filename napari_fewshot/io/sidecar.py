"""The sidecar ``STEM.labels.json`` that keeps a mask's class names and colours beside it (NIfTI, TIFF, PNG, NPY).

    sidecar_path("out/ct_mask.nii.gz")       # out/ct_mask.labels.json
    sidecar_path("out/ct_mask.png")          # out/ct_mask.labels.json (beside the folder of PNG slices)
    read_sidecar("out/ct_mask.nii.gz")       # the ClassTable written with it, or None

Written by :func:`napari_fewshot.io.writers.write_mask` after the mask, under the mask's overwrite rule
(:func:`napari_fewshot.io.targets.check_sidecar`: a file that is not ours is never replaced); read by the
napari reader and by ``segment --support``. This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .class_table import SIDECAR_FORMAT, ClassTable
from .naming import split_extension

SIDECAR_SUFFIX = ".labels.json"


def sidecar_path(mask_path: str | os.PathLike) -> Path:
    """``STEM.labels.json`` beside the mask ``STEM.EXT`` (for a PNG set, beside its folder ``STEM``)."""
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


__all__ = ["SIDECAR_SUFFIX", "is_ours", "read_sidecar", "sidecar_bytes", "sidecar_path"]
