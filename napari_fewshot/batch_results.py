"""A batch's ``results.csv`` and the checks that let a restart trust a mask (no torch, no dask).

One row per scan: scan, mask, status (ok | error | pending), error, seconds, slices, voxel_ml, one
``<class>_ml`` column per class of the bank, bank (the bank's signature), mask_sha256 (the mask file's, or
for a PNG set the set's, SHA-256 once it was written and read back). A row "pending" was started and not
finished (the batch was interrupted or killed): its mask, if any, is the batch's own and is redone.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

from .io.atomic import atomic_write

CSV_NAME = "results.csv"
BASE_COLUMNS = ("scan", "mask", "status", "error", "seconds", "slices", "voxel_ml")
TAIL_COLUMNS = ("bank", "mask_sha256")


def class_columns(bank) -> dict[int, str]:
    """Class id -> CSV column name (``liver_ml``; ``label_3_ml`` for unnamed classes), unique."""
    from .paths import slug

    columns: dict[int, str] = {}
    for c in bank.class_ids:
        base = slug(bank.class_names.get(c, f"label {c}")) or f"label_{c}"
        name = f"{base}_ml"
        if name in columns.values() or name in BASE_COLUMNS:
            name = f"{base}_{c}_ml"
        columns[c] = name
    return columns


def header(columns: dict[int, str]) -> list[str]:
    """The CSV's columns for a bank's class columns."""
    return list(BASE_COLUMNS) + list(columns.values()) + list(TAIL_COLUMNS)


def read_results(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Rows of a results CSV by scan name ({} when it does not exist or cannot be read)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as handle:
            return {row["scan"]: row for row in csv.DictReader(handle) if row.get("scan")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def write_results(path: Path, rows: dict[str, dict[str, Any]], columns: list[str]) -> None:
    """Write the rows (sorted by scan) through io.atomic: a crash never leaves a half-written CSV."""
    extra = [c for row in rows.values() for c in row if c not in columns]
    names = columns + sorted(set(extra), key=extra.index)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            for name in sorted(rows):
                writer.writerow({k: ("" if v is None else v) for k, v in rows[name].items()})

    atomic_write(path, write)


def make_row(scan, result: dict[str, Any], columns: dict[int, str], bank_key: str) -> dict[str, Any]:
    """The CSV row of a scan from its task's result dict (status ok | error | pending)."""
    status = result.get("status", "error")
    row = {"scan": scan.name, "mask": result.get("mask", scan.mask) if status == "ok" else "",
           "status": status, "error": " ".join(str(result.get("error", "")).split()),
           "seconds": f"{result['total_seconds']:.2f}" if "total_seconds" in result else "",
           "slices": result.get("slices", ""),
           "voxel_ml": f"{result['voxel_ml']:.6g}" if "voxel_ml" in result else ""}
    volumes = result.get("volumes_ml", {})
    for c, column in columns.items():
        row[column] = f"{volumes[c]:.3f}" if c in volumes else ""
    row["bank"] = bank_key
    row["mask_sha256"] = result.get("mask_sha256", "")
    return row


def mask_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a mask file, or of a PNG set (a folder: its sorted file names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def mask_is_done(output_dir: Path, row: dict[str, str], bank_key: str) -> bool:
    """Whether a restart may skip the scan of `row`: it says ok with this bank, and its mask is there and
    complete. A row with a checksum needs the mask's to match (a truncated or replaced mask does not);
    an older row without one needs the mask to read back with the recorded number of slices."""
    if row.get("status") != "ok" or row.get("bank") != bank_key or not row.get("mask"):
        return False
    mask = output_dir / row["mask"]
    try:
        if row.get("mask_sha256"):
            return mask.exists() and mask_digest(mask) == row["mask_sha256"]
        from .io import read_labels

        return int(row.get("slices") or -1) == read_labels(mask).shape[0]
    except Exception:  # noqa: BLE001 - a mask that cannot be read back is simply not done
        return False


__all__ = ["BASE_COLUMNS", "CSV_NAME", "class_columns", "header", "make_row", "mask_digest", "mask_is_done",
           "read_results", "write_results"]
