"""The scans of a cohort folder and the mask each one gets (no torch, no dask).

    scans = find_scans("cohort/", exclude="masks/")    # sorted; each real file or folder once
    check_unique_masks(scans)                          # FewShotError when two scans would share a mask

- Scans: every NIfTI / TIFF / NPY / PNG / JPEG file and every folder holding a DICOM series under the
  input folder (recursively, symlinks followed); the input folder itself when it holds a DICOM series.
- Symlinks are followed, but a link back up the tree is a loop, not more scans, and each real file or
  DICOM folder is one scan (another name for it is reported, not segmented twice).
- Not scans: the output folder (``exclude``), any folder holding a batch's results.csv (an earlier run's
  masks), named pipes, sockets and devices (reading one may never end: never opened) and BUSI-style mask
  files ``NAME_mask.png`` (the image folders' rule, :func:`napari_fewshot.io.folders.is_mask_file_name`);
  they are reported, not segmented.
- Masks: the scan's relative path in the output folder, in the mask format of the scan's format
  (:func:`napari_fewshot.io.naming.cohort_mask_name`): NIfTI -> NIfTI, DICOM folder -> ``FOLDER.nii.gz``,
  TIFF -> TIFF, NPY -> NPY, PNG/JPEG -> PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .batch_results import CSV_NAME, is_results_csv
from .errors import FewShotError
from .io._arrays import not_a_regular_file
from .io.folders import is_mask_file_name
from .io.formats import format_of
from .io.naming import cohort_mask_name
from .io.readers import is_dicom_file


@dataclass(frozen=True)
class Scan:
    """One scan of the cohort: `name` (path relative to the input folder, '/'-separated; the folder's own
    name when the input folder is the series), `path`, `kind` ("file" or "dicom" for a DICOM folder) and
    `mask` (path relative to the output folder)."""

    name: str
    path: Path
    kind: str
    mask: str


def find_scans(input_dir: str | os.PathLike, exclude: str | os.PathLike | None = None,
               duplicates: list[tuple[str, str]] | None = None,
               left_out: list[tuple[str, str]] | None = None) -> list[Scan]:
    """Every scan under `input_dir`, sorted by name; `exclude` (e.g. the output folder) is not searched.

    A folder whose real path is one of its own ancestors' (a symlink loop) is not entered again. A real
    file or DICOM folder reached under several names is one scan, named by the path with the fewest
    symlinks (then the first in sorted order). duplicates: when given, gets (skipped name, the scan's
    name) for each other name. left_out: when given, gets (name, why) for each earlier batch output folder,
    named pipe / socket / device and BUSI mask file passed over. FewShotError when the folder does not exist
    or holds no scan.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FewShotError(f"The input folder {root} does not exist.")
    skip = os.path.realpath(exclude) if exclude is not None else None
    found: dict[str, list[tuple[int, Scan]]] = {}  # real path -> (symlinks on the way, scan) per name
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real = os.path.realpath(here)
        relative = here.relative_to(root).as_posix()
        ancestors = [os.path.realpath(p) for p in list(here.parents)[: len(here.relative_to(root).parts)]]
        if real in ancestors or real == skip:
            dirs[:] = []  # a symlink back up the tree: a loop, not more scans; or the output folder
            continue
        if here != root and is_results_csv(here / CSV_NAME):
            dirs[:] = []
            _note(left_out, relative, "an earlier batch's output folder (it holds its results.csv)")
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = sorted(f for f in files if not f.startswith("."))
        for special in [f for f in files if not_a_regular_file(here / f)]:
            files.remove(special)  # opening a named pipe waits for a writer: the search would never end
            _note(left_out, special if relative == "." else f"{relative}/{special}",
                  "not a regular file (a named pipe, socket or device)")
        for mask_file in [f for f in files if is_mask_file_name(f)]:
            files.remove(mask_file)
            _note(left_out, mask_file if relative == "." else f"{relative}/{mask_file}", "a mask (NAME_mask.png)")
        links = _symlinks_on_the_way(root, relative)
        if any(is_dicom_file(here / f) for f in files):
            name = relative if here != root else root.resolve().name
            found.setdefault(real, []).append((links, Scan(name, here, "dicom", cohort_mask_name(name, "dicom"))))
            continue
        for file_name in files:
            fmt = format_of(file_name, "read")
            if fmt is None:
                continue
            rel = file_name if relative == "." else f"{relative}/{file_name}"
            path = here / file_name
            scan = Scan(rel, path, "file", cohort_mask_name(rel, fmt.name))
            found.setdefault(os.path.realpath(path), []).append((links + path.is_symlink(), scan))
    scans = []
    for names in found.values():
        names.sort(key=lambda item: (item[0], item[1].name))
        scans.append(names[0][1])
        if duplicates is not None:
            duplicates.extend((other.name, names[0][1].name) for _, other in names[1:])
    if not scans:
        raise FewShotError(f"No scans (NIfTI, DICOM folders, TIFF, NPY, PNG, JPEG) were found under {root}.")
    if duplicates is not None:
        duplicates.sort()
    if left_out is not None:
        left_out.sort()
    return sorted(scans, key=lambda s: s.name)


def _note(left_out: list[tuple[str, str]] | None, name: str, why: str) -> None:
    if left_out is not None:
        left_out.append((name, why))


def _symlinks_on_the_way(root: Path, relative: str) -> int:
    """How many folders of `relative` (a path under `root`) are symlinks."""
    if relative == ".":
        return 0
    parts = Path(relative).parts
    return sum((root.joinpath(*parts[: k + 1])).is_symlink() for k in range(len(parts)))


def check_unique_masks(scans: list[Scan]) -> None:
    """FewShotError naming the scans when two of them would write the same mask (``x.png`` and ``x.jpg``;
    the DICOM folder ``a/series`` and the file ``a/series.nii.gz``). Names differing only in case count
    as the same: on macOS and Windows file systems they are one file.

    Refusing (rather than renaming one mask) keeps every mask named after its scan, so a mask can never
    be taken for another patient's; the user decides which scan to rename, before anything is computed.
    """
    by_mask: dict[str, list[str]] = {}
    for scan in scans:
        by_mask.setdefault(scan.mask.casefold(), []).append(scan.name)
    clashes = [names for names in by_mask.values() if len(names) > 1]
    if not clashes:
        return
    listed = "; ".join(" and ".join(names) for names in clashes[:3]) + (" ..." if len(clashes) > 3 else "")
    raise FewShotError(f"{len(clashes)} mask name(s) would be shared by two or more scans ({listed}), so one mask "
                       "would overwrite the other; rename or move one scan of each group and run again.")


__all__ = ["Scan", "check_unique_masks", "find_scans"]
