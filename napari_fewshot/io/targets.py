"""The one rule for "may this path be written": checked before any compute by the CLI (`segment`, `bank`),
:func:`napari_fewshot.pipeline.segment_file`, batch's plan and the widget's exports.

    check_target("out/mask.nii.gz", 40, overwrite=False, inputs=["scan.nii.gz", "support.nii.gz"], max_label=4)
    check_target("maps/heatmap_class1.nii.gz", kind="heatmap", inputs=[...])
    check_target("liver.fewshot", kind=None)        # a file of no registered format (a prototype bank)

WriteError (one sentence) when:

- the extension names no format that holds `kind` (:mod:`.formats`), or the mask's highest label is more
  than the format holds (a PNG: 65535);
- a name on the way is longer than the file system takes (NAME_MAX), or the path is a symbolic link that
  leads nowhere (or in a loop);
- the target is one of the `inputs` (same file, by real path), or a PNG set's folder holds an input;
- something exists there and `overwrite` is off; with it, ``--overwrite`` replaces only what the tool
  would write: a file (never a folder) at the target's name, and a PNG set's folder ``STEM/`` only when
  it holds nothing but ``STEM_NNNN.png`` files (a folder of the user's is never replaced);
- a mask format that needs a DICOM source (DICOM SEG) for a `scan` that was not read from DICOM;
- the class names go to a sidecar ``STEM.labels.json`` (`classes`, :mod:`.class_table`) and a file is there
  without `overwrite`, or one the tool did not write (a file of the user's is never replaced);
- the nearest existing folder on the way does not take a new file (tried: permission bits say nothing for
  root, and a read-only mount only shows on writing).

A PNG mask of several slices is the folder ``STEM`` beside ``STEM.png`` (:func:`set_folder`); an
interrupted replacement of such a set is put right first (:func:`recover_set`).
This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import WriteError
from .atomic import temp_prefix
from .formats import FileFormat, Kind, extensions, format_of

_WHAT = {"mask": "a mask", "heatmap": "a float image"}
NAME_MAX_DEFAULT = 255  # where the file system does not say (POSIX's pathconf)
STALE_STAGING_SECONDS = 600  # a staging folder this old belongs to no running writer


def writable_format(path: Path, kind: Kind) -> FileFormat:
    """The format `kind` is written in at `path`; WriteError naming the extensions that work."""
    fmt = format_of(path, kind)
    if fmt is None:
        raise WriteError(f"Cannot write {_WHAT[kind]} to '{path}': use one of the extensions "
                         f"{', '.join(extensions(kind, 'dicom'))}.")
    return fmt


def set_folder(path: str | os.PathLike) -> Path:
    """The folder ``STEM`` of the PNG set written for ``STEM.png``."""
    path = Path(path)
    return path.with_name(path.stem)


def set_file_name(path: str | os.PathLike, index: int, fmt: FileFormat) -> str:
    """``STEM_NNNN.EXT``: the `index`-th slice file of the set written for ``STEM.EXT``."""
    return f"{Path(path).stem}_{index:04d}{fmt.extension}"


def is_own_set(folder: Path, stem: str, fmt: FileFormat) -> bool:
    """True when `folder` holds nothing but regular files named ``STEM_NNNN.EXT``: a set the tool wrote
    (an empty folder too); anything else in it is the user's."""
    pattern = re.compile(re.escape(stem) + r"_\d{4,}" + re.escape(fmt.extension) + "$", re.IGNORECASE)
    return all(entry.is_file(follow_symlinks=False) and pattern.match(entry.name) for entry in os.scandir(folder))


def check_target(path: str | os.PathLike, n_slices: int | None = None, *, kind: Kind | None = "mask",
                 overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 max_label: int | None = None, classes: bool = False, scan=None) -> None:
    """WriteError (one sentence) unless `path` may be written now (see the module's list).

    n_slices: the mask's slices when known (a PNG of several slices is the folder ``STEM``); None checks
        both the single file and the set.
    kind: "mask", "heatmap", or None for a file of no registered format (a bank).
    inputs: the files and folders the output is made from; none of them is ever replaced.
    max_label: the highest label the mask can hold (the support's or the bank's highest class), when known.
    classes: the mask is written with class names (a sidecar for formats that do not keep them inside).
    scan: the Volume the mask belongs to, when known (a DICOM SEG needs one read from DICOM).
    Nothing is created; a PNG set interrupted mid-replacement is put back first (:func:`recover_set`).
    """
    path = Path(path)
    fmt = writable_format(path, kind) if kind is not None else None
    if fmt is not None and max_label is not None:
        check_labels(path, max_label)
    if fmt is not None and scan is not None:
        check_source(fmt, scan, path)
    if fmt is not None and classes and not fmt.keeps_classes and kind == "mask":
        check_sidecar(path, overwrite)
    as_set = fmt is not None and fmt.slices_per_file
    counts = [n_slices] if n_slices is not None else [1, 2]
    for count in counts:
        if as_set and count > 1:
            folder = set_folder(path)
            _check_name(folder / set_file_name(path, count - 1, fmt))
            recover_set(folder)
            check_set_folder(folder, path.stem, fmt, overwrite, inputs)
        else:
            _check_name(path)
            _check_file(path, overwrite, inputs)
    check_writable(path)


def check_source(fmt: FileFormat, scan, path: str | os.PathLike) -> None:
    """WriteError when `fmt` needs a DICOM source (DICOM SEG) and `scan` (a Volume, or None) was not read from
    DICOM files."""
    if fmt.needs_dicom_source and (getattr(scan, "format", None) != "dicom" or not getattr(scan, "meta", {}).get(
            "source_files")):
        raise WriteError(f"Cannot write '{path}': a {fmt.label} file refers to the scan's DICOM images, and this "
                         "scan was not read from DICOM files; save the mask as NIfTI (.nii.gz) instead.")


def check_sidecar(path: str | os.PathLike, overwrite: bool) -> bool:
    """WriteError unless the class-name sidecar of the mask `path` (:func:`.sidecar.sidecar_path`) may be
    written: absent; or one the tool wrote, with `overwrite` or when no mask ``STEM.EXT`` it could belong to is
    there any more (a mask deleted to be made again). Returns whether a sidecar is replaced."""
    from .sidecar import SIDECAR_SUFFIX, is_ours, sidecar_path

    sidecar = sidecar_path(path)
    _check_name(sidecar)
    if not _exists(sidecar):
        return False
    if sidecar.is_dir():
        raise WriteError(f"Cannot write the class names to '{sidecar}': a folder of that name exists.")
    if not is_ours(sidecar):
        raise WriteError(f"Cannot write the class names to '{sidecar}': the file there was not written by "
                         "napari-fewshot, and a file of the user's is never replaced.")
    stem = sidecar.name[: -len(SIDECAR_SUFFIX)]
    mask_there = any(_exists(sidecar.with_name(stem + e)) for e in extensions("mask")) or _exists(set_folder(path))
    if not overwrite and mask_there:
        raise WriteError(f"Cannot write the class names to '{sidecar}': it already exists (pass overwrite=True to "
                         "replace it).")
    return True


def check_labels(path: str | os.PathLike, max_label: int) -> None:
    """WriteError when the mask format of `path` cannot hold the label `max_label` (a PNG: 65535)."""
    fmt = writable_format(Path(path), "mask")
    if fmt.max_label is not None and max_label > fmt.max_label:
        raise WriteError(f"Cannot write '{path}': {fmt.name.upper()} holds labels up to {fmt.max_label} only "
                         f"(the labels go up to {max_label}; use .tif or .nii.gz).")


def check_writable(path: str | os.PathLike) -> None:
    """WriteError unless a file named `path` could be created: its folder, or the nearest existing folder
    above it (missing ones are created when writing), takes a new file (tried, then removed)."""
    path = Path(path)
    folder = path.parent
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"Cannot write '{path}': part of the folder path '{folder}' is a file.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".napari-fewshot-probe.", dir=folder)
    except OSError as exc:
        raise WriteError(f"Cannot write '{path}': the folder '{folder}' is not writable ({_reason(exc)}).") from exc
    os.close(handle)
    os.unlink(probe)


def recover_set(folder: Path) -> None:
    """Finish what a killed replacement of the PNG set `folder` left: the old set moved aside
    (``.STEM.set.old.*``) comes back when nothing has the name (the next write makes the new one), and
    is deleted when the new set took the name; staging folders (``.STEM.set.new.*``) left by a kill are
    deleted once stale."""
    parent = folder.parent
    if not parent.is_dir():
        return
    prefix = temp_prefix(folder.name)
    for entry in sorted(parent.glob(glob_escape(prefix) + "set.old.*")):
        kept = entry / folder.name
        if not kept.is_dir():
            continue
        if not _exists(folder):
            os.rename(kept, folder)
        shutil.rmtree(entry, ignore_errors=True)
    for entry in parent.glob(glob_escape(prefix) + "set.new.*"):
        if entry.is_dir() and time.time() - entry.stat().st_mtime > STALE_STAGING_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)


def glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def name_max(folder: Path) -> int:
    """The longest file name the file system holding `folder` (or its nearest existing parent) takes."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_MAX_DEFAULT


def _check_name(path: Path) -> None:
    longest = name_max(path.parent)
    for part in path.parts:
        if len(os.fsencode(part)) > longest:
            raise WriteError(f"Cannot write '{path}': the name '{part[:40]}...' is {len(os.fsencode(part))} bytes "
                             f"long, more than the {longest} the file system takes.")


def _exists(path: Path) -> bool:
    """exists(), but a symbolic link that leads nowhere or in a loop is a WriteError, not "missing"."""
    try:
        path.stat()
        return True
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOENT and path.is_symlink()):
            raise WriteError(f"Cannot write '{path}': it is a symbolic link that leads nowhere "
                             f"({_reason(exc)}).") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise WriteError(f"Cannot write '{path}': {_reason(exc)}.") from exc


def _same_or_inside(target: Path, inputs: Iterable[str | os.PathLike], inside: bool) -> Path | None:
    """The first input that is `target` (by real path or samefile), or lies inside it when `inside`."""
    real = Path(os.path.realpath(target))
    for given in inputs:
        candidate = Path(os.path.realpath(given))
        if candidate == real or (inside and real in candidate.parents):
            return Path(given)
        try:
            if os.path.samefile(given, target):
                return Path(given)
        except OSError:
            pass
    return None


def _check_file(path: Path, overwrite: bool, inputs) -> None:
    exists = _exists(path)
    if exists and path.is_dir():
        raise WriteError(f"Cannot write '{path}': a folder of that name exists.")
    clash = _same_or_inside(path, inputs, inside=False)
    if clash is not None:
        raise WriteError(f"Cannot write '{path}': it is the input {clash}; choose another output name.")
    if exists and not overwrite:
        raise WriteError(f"Cannot write '{path}': it already exists (pass overwrite=True to replace it).")


def check_set_folder(folder: Path, stem: str, fmt: FileFormat, overwrite: bool, inputs=()) -> None:
    """The folder of a PNG set: a file of its name is never replaced; a folder only with overwrite, and
    only when it is a set the tool wrote; never one holding an input."""
    if not _exists(folder):
        return
    if not folder.is_dir():
        raise WriteError(f"Cannot write the PNG slices into '{folder}': a file of that name exists.")
    clash = _same_or_inside(folder, inputs, inside=True)
    if clash is not None:
        raise WriteError(f"Cannot write the PNG slices into '{folder}': it holds the input {clash}; choose "
                         "another output name.")
    if not overwrite:
        raise WriteError(f"Cannot write the PNG slices into '{folder}': the folder exists "
                         "(pass overwrite=True to replace it).")
    if not is_own_set(folder, stem, fmt):
        raise WriteError(f"Cannot write the PNG slices into '{folder}': the folder holds files other than "
                         f"{stem}_NNNN{fmt.extension} slices, and a folder the tool did not write is never replaced.")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


__all__ = ["check_labels", "check_set_folder", "check_sidecar", "check_source", "check_target", "check_writable",
           "is_own_set", "name_max", "recover_set", "set_file_name", "set_folder", "writable_format"]
