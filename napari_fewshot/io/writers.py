"""Writing masks and float images in the formats of :mod:`.formats`, atomically, never silently overwriting.

Every file goes through :func:`napari_fewshot.io.atomic.atomic_write`: a kill or a full disk never leaves
a half-written file under the target's name, permissions follow the umask, and "do not overwrite" is an
exclusive create (a second writer racing for the same name fails instead of replacing the first).
A mask of several slices in a one-slice-per-file format (PNG) is a *set*: ``STEM/STEM_0000.png`` ...
written into a temporary folder that takes its name in one rename, so a kill never leaves a partial
stack that looks complete.

:func:`napari_fewshot.io.targets.check_target` checks a target before any compute (format, folder,
permissions, existing files, inputs); the writers here apply the same rules again when writing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import WriteError
from .atomic import atomic_write, current_umask, fsync_folder, temp_prefix
from .class_table import ClassTable
from .formats import FileFormat, format_of
from .sidecar import is_ours, sidecar_bytes, sidecar_path
from .targets import (check_set_folder, check_sidecar, check_source, recover_set, set_file_name, set_folder,
                      writable_format)
from .volume import Volume


def write_mask(
    path: str | os.PathLike, mask: np.ndarray, like: Volume | None = None, *, overwrite: bool = False,
    classes: ClassTable | None = None,
) -> list[Path]:
    """Write a label mask in the format its extension names (:func:`napari_fewshot.io.formats.format_of`).

    Args:
        path: e.g. ``.tif``/``.tiff`` (one multi-page stack), ``.nii``/``.nii.gz`` (on ``like``'s own
            voxel grid with its affine when it came from NIfTI/DICOM), ``.npy`` or ``.png``
            (S == 1: that file; S > 1: the folder ``STEM`` holding ``STEM_0000.png`` ..., see
            :func:`mask_targets`). Missing folders are created.
        mask: ``(S, H, W)`` (or ``(H, W)``) non-negative integers or bools on the display grid.
        like: the Volume the mask belongs to (shape check, spacing, affine; the DICOM source for
            formats that need one).
        overwrite: replace existing files instead of raising WriteError (off: created exclusively).
        classes: the class names and colours: inside a DICOM SEG; for the other formats in the sidecar
            ``STEM.labels.json`` (:mod:`.sidecar`), written after the mask under the same overwrite rule
            (:func:`~.targets.check_sidecar`; with `overwrite` and no classes, a sidecar of ours left from an
            earlier mask is removed).

    Returns:
        The paths written (the mask's, then the sidecar). Values are stored as uint8 when max < 256, else
        uint16 (uint32 beyond).
    """
    path = Path(path)
    fmt = writable_format(path, "mask")
    stack = _as_mask_stack(mask, path)
    _check_like(stack, like, path)
    check_source(fmt, like, path)
    high = int(stack.max())
    if fmt.max_label is not None and high > fmt.max_label:
        raise WriteError(f"Cannot write '{path}': {fmt.name.upper()} holds labels up to {fmt.max_label} only "
                         f"(the mask holds {high}; use .tif or .nii.gz).")
    sidecar = bool(classes) and not fmt.keeps_classes
    replace_sidecar = check_sidecar(path, overwrite) if sidecar else False
    if fmt.slices_per_file and stack.shape[0] > 1:
        written = _write_slices(path, fmt, stack, overwrite)
    else:
        save = functools.partial(fmt.save, classes=classes) if fmt.keeps_classes else fmt.save
        written = _write_single(path, save, stack, like, overwrite)
    if sidecar:
        target = sidecar_path(path)
        _write_file(target, lambda tmp: tmp.write_bytes(sidecar_bytes(classes)), replace_sidecar)
        written.append(target)
    elif overwrite and not fmt.keeps_classes and is_ours(sidecar_path(path)):
        sidecar_path(path).unlink()  # it named the classes of the mask just replaced
    return written


def write_image(
    path: str | os.PathLike, data: np.ndarray, like: Volume | None = None, *, overwrite: bool = False
) -> list[Path]:
    """Write a float image (e.g. a probability heatmap) as float32 in a format that holds heatmaps
    (``.tif``/``.tiff``, ``.nii``/``.nii.gz`` or ``.npy``).

    Args:
        data: ``(S, H, W)`` (or ``(H, W)``) real values on the display grid; NaN is kept.
        like, overwrite: as for :func:`write_mask`.

    Returns:
        The one path written.
    """
    path = Path(path)
    fmt = writable_format(path, "heatmap")
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise WriteError(
            f"Cannot write '{path}': the image must be a non-empty real (S, H, W) array, got {arr.dtype} {arr.shape}."
        )
    stack = arr.astype(np.float32)
    _check_like(stack, like, path)
    check_source(fmt, like, path)
    return _write_single(path, fmt.save, stack, like, overwrite)


def _as_mask_stack(mask: np.ndarray, path: Path) -> np.ndarray:
    """Validate a mask and return it ``(S, H, W)`` as uint8 / uint16 / uint32."""
    arr = np.asarray(mask)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.size == 0:
        raise WriteError(f"Cannot write '{path}': a mask must be a non-empty (S, H, W) array, got shape {arr.shape}.")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
        raise WriteError(f"Cannot write '{path}': the mask holds non-integer values (use write_image for float data).")
    if arr.dtype.kind not in "biuf":
        raise WriteError(f"Cannot write '{path}': a mask must hold integers, got {arr.dtype}.")
    low, high = (int(arr.min()), int(arr.max()))
    if low < 0:
        raise WriteError(f"Cannot write '{path}': the mask holds negative labels (minimum {low}).")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return arr.astype(dtype)
    raise WriteError(f"Cannot write '{path}': label {high} does not fit 32 bits.")


def _check_like(stack: np.ndarray, like: Volume | None, path: Path) -> None:
    if like is not None and stack.shape != like.data.shape[:3]:
        raise WriteError(
            f"Cannot write '{path}': the data is {stack.shape} (S, H, W) but the image it belongs to is "
            f"{like.data.shape[:3]}."
        )


def mask_targets(path: str | os.PathLike, n_slices: int) -> list[Path]:
    """The files :func:`write_mask` writes for a mask of `n_slices` slices: `path` itself, except for a PNG
    of several slices: ``STEM/STEM_0000.png`` ... in the folder ``STEM`` beside `path`."""
    path = Path(path)
    fmt = format_of(path, "mask")
    if fmt is not None and fmt.slices_per_file and n_slices > 1:
        return [set_folder(path) / set_file_name(path, index, fmt) for index in range(n_slices)]
    return [path]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _check_targets(targets: list[Path], overwrite: bool) -> None:
    """Fail before writing anything when a target exists (and overwrite is off) or is a folder."""
    for target in targets:
        if target.is_dir():
            raise WriteError(f"Cannot write '{target}': a folder of that name exists.")
        if target.exists() and not overwrite:
            raise WriteError(f"Cannot write '{target}': the file exists (pass overwrite=True to replace it).")


def _make_folder(folder: Path, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise WriteError(f"Cannot write '{target}': part of the folder path '{folder}' is a file.") from exc
    except OSError as exc:
        raise WriteError(f"Cannot write '{target}': the folder '{folder}' is not writable ({_reason(exc)}).") from exc


def _write_file(target: Path, save, overwrite: bool) -> None:
    """`save(tmp)` through atomic_write; a lost race or an OS error becomes a WriteError."""
    _make_folder(target.parent, target)
    try:
        atomic_write(target, save, overwrite=overwrite)
    except FileExistsError as exc:
        raise WriteError(f"Cannot write '{target}': the file exists (pass overwrite=True to replace it).") from exc
    except IsADirectoryError as exc:
        raise WriteError(f"Cannot write '{target}': a folder of that name exists.") from exc
    except OSError as exc:
        raise WriteError(f"Cannot write '{target}': {_reason(exc)}.") from exc


def _write_single(path: Path, save, stack: np.ndarray, like: Volume | None, overwrite: bool) -> list[Path]:
    """Write ``stack`` (S, H, W) as one file with `save` (a format's; for a one-slice-per-file format, S == 1)."""
    _check_targets([path], overwrite)
    _write_file(path, lambda tmp: save(tmp, stack, like), overwrite)
    return [path]


def _write_slices(path: Path, fmt: FileFormat, stack: np.ndarray, overwrite: bool) -> list[Path]:
    """One file per slice (PNG): the set ``STEM/STEM_0000.png`` ..., given its name in one rename."""
    folder = set_folder(path)
    recover_set(folder)
    check_set_folder(folder, path.stem, fmt, overwrite)
    _make_folder(folder.parent, folder)
    targets = mask_targets(path, stack.shape[0])
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name) + "set.new.", dir=folder.parent))
    except OSError as exc:
        raise WriteError(f"Cannot write '{folder}': the folder '{folder.parent}' is not writable "
                         f"({_reason(exc)}).") from exc
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the set from the group
        for target, plane in zip(targets, stack):
            staged = staging / target.name
            fmt.save(staged, plane[np.newaxis], None)
            with open(staged, "rb+") as file:
                os.fsync(file.fileno())
        fsync_folder(staging)
        _rename_set(staging, folder, overwrite)
    except OSError as exc:
        raise WriteError(f"Cannot write '{folder}': {_reason(exc)}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_folder(folder.parent)
    return targets


def _rename_set(staging: Path, folder: Path, overwrite: bool) -> None:
    """Give the complete set `staging` the name `folder`. Without overwrite, a set that appeared meanwhile
    is never replaced (rename onto a non-empty folder fails). With it, the old set is moved aside into
    ``.STEM.set.old.*`` first and deleted once the new one has the name; should the process die between
    the two renames, :func:`napari_fewshot.io.targets.recover_set` (run before the next write or check)
    puts the old set back."""
    if not overwrite:
        if folder.exists():
            raise WriteError(f"Cannot write the PNG slices into '{folder}': the folder exists "
                             "(pass overwrite=True to replace it).")
        try:
            os.rename(staging, folder)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise WriteError(f"Cannot write the PNG slices into '{folder}': it appeared while writing.") from exc
            raise
        return
    aside = None
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name) + "set.old.", dir=folder.parent))
        os.rename(folder, aside / folder.name)
        fsync_folder(folder.parent)
    try:
        os.rename(staging, folder)
    except OSError:
        if aside is not None:  # the old set takes its name back
            os.rename(aside / folder.name, folder)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        fsync_folder(folder.parent)
        with contextlib.suppress(OSError):
            shutil.rmtree(aside)
