"""The per-class volume CSV written beside an exported mask: ``STEM_volumes.csv`` (one row per class,
columns ``core.volumes.CSV_COLUMNS``), through io/atomic.py."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import WriteError
from .atomic import atomic_write
from .naming import split_extension

VOLUMES_SUFFIX = "_volumes.csv"


def volumes_csv_path(mask: str | os.PathLike) -> Path:
    """``liver_mask.nii.gz`` -> ``liver_mask_volumes.csv`` beside it (a folder: ``FOLDER_volumes.csv`` beside it)."""
    mask = Path(mask)
    return mask.with_name(split_extension(mask.name)[0] + VOLUMES_SUFFIX)


def write_volumes_csv(path: str | os.PathLike, rows: list[dict], columns) -> Path:
    """Write ``rows`` (``core.volumes.ClassVolume.row()`` dicts, columns ``core.volumes.CSV_COLUMNS``) to
    ``path``; returns the path."""

    path = Path(path)
    if path.exists() and not _written_by_us(path, columns):
        raise WriteError(f"Not replaced: '{path}' exists and is not a volume table of this tool; "
                         "move it away to have the volumes written beside the mask.")

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
    return path


def _written_by_us(path: Path, columns) -> bool:
    """True when ``path`` is a regular file whose first line is this table's header (an earlier export's)."""
    try:
        with open(path, newline="") as handle:
            return path.is_file() and handle.readline().strip() == ",".join(columns)
    except (OSError, UnicodeDecodeError):
        return False
