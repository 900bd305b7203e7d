"""A batch's ``results.csv`` and the checks that tell the batch's own masks from the user's (no torch, no dask).

One row per scan: scan, mask, status, error, seconds, slices, voxel_ml, one ``<class>_ml`` column per
class of the bank, bank (the bank's signature), mask_sha256 (the SHA-256 of the mask the batch last wrote
for the scan, or for a PNG set the set's, once written and read back). Status:

- ok: segmented; error: failed (the error column says why);
- pending: started and not finished (the batch was interrupted or killed): its mask, if any, is the
  batch's own and is redone;
- edited: the mask differs from the one the batch wrote (someone corrected it): it is kept, never
  replaced, and the row's volumes are left empty (they were the prediction's).

A row that is not ok keeps the checksum of the mask the batch wrote before, so a failed or interrupted
redo still knows that file is the batch's own.
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


def make_row(scan, result: dict[str, Any], columns: dict[int, str], bank_key: str,
             previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CSV row of a scan from its task's result dict (status ok | error | pending). A row that is not
    ok keeps `previous`'s mask and checksum: the mask the batch wrote before is still its own."""
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
    if status != "ok" and previous and previous.get("mask_sha256"):
        row["mask"], row["mask_sha256"] = previous.get("mask", ""), previous["mask_sha256"]
    return row


def edited_row(row: dict[str, Any], columns: dict[int, str]) -> dict[str, Any]:
    """`row` of a scan whose mask was edited after the batch wrote it: status edited, a note, no volumes
    (they were the prediction's); the checksum stays the batch's, so later runs still see the edit."""
    kept = {**row, "status": "edited", "seconds": ""}
    kept["error"] = "the mask was edited after the batch wrote it: kept, not replaced"
    for column in columns.values():
        kept[column] = ""
    return kept


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


MISSING, DONE, OWN, OTHER_BANK, EDITED, FOREIGN = "missing", "done", "own", "other bank", "edited", "foreign"


def mask_state(output_dir: Path, mask: str, row: dict[str, str] | None, bank_key: str) -> str:
    """What the file at ``output_dir / mask`` (the row's mask when it names one) is to a batch with bank
    `bank_key`:

    MISSING: nothing there (segment the scan). FOREIGN: a file without a row (never the batch's).
    DONE: the row says ok with this bank and the mask has its checksum (an older row without one: the
    mask reads back with the recorded slices). EDITED: the row's checksum differs and the file reads back
    as a mask: someone corrected it (kept). OWN / OTHER_BANK: the batch's own mask to redo (the row is
    pending or not ok, or the file does not read back: damaged), the row's bank this one / another.
    """
    target = output_dir / ((row or {}).get("mask") or mask)
    if not (target.exists() or target.is_symlink()):
        return MISSING
    if row is None:
        return FOREIGN
    status, recorded = row.get("status"), row.get("mask_sha256")
    if status != "pending":
        if recorded:
            matches = _digest_or_none(target) == recorded
        else:  # an older row, written before checksums
            matches = status == "ok" and _slices_read_back(target) == int(row.get("slices") or -1)
        if not matches and _slices_read_back(target) is not None:
            return EDITED
        if matches and status == "ok" and row.get("bank") == bank_key:
            return DONE
    return OWN if row.get("bank") == bank_key else OTHER_BANK


def _digest_or_none(path: Path) -> str | None:
    try:
        return mask_digest(path)
    except OSError:
        return None


def _slices_read_back(path: Path) -> int | None:
    """The number of slices of the mask at `path`, or None when it does not read back as a mask."""
    try:
        from .io import read_labels

        return int(read_labels(path).shape[0])
    except Exception:  # noqa: BLE001 - a file that cannot be read back is simply not a mask
        return None


def is_results_csv(path: Path) -> bool:
    """Whether `path` is a batch's results.csv (its header starts with the batch's columns): the folder
    holding it is an earlier batch's output."""
    try:
        with open(path, newline="") as handle:
            first = next(csv.reader(handle), [])
    except (OSError, csv.Error, UnicodeDecodeError):
        return False
    return tuple(first[: len(BASE_COLUMNS)]) == BASE_COLUMNS and first[-len(TAIL_COLUMNS):] == list(TAIL_COLUMNS)


__all__ = ["BASE_COLUMNS", "CSV_NAME", "DONE", "EDITED", "FOREIGN", "MISSING", "OTHER_BANK", "OWN", "class_columns",
           "edited_row", "header", "is_results_csv", "make_row", "mask_digest", "mask_state", "read_results",
           "write_results"]
