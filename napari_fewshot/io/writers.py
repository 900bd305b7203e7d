"""Writing masks and float images: TIFF, NIfTI, NPY (and PNG for masks), atomically, never silently overwriting."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import WriteError
from .nifti import to_nifti_image
from .volume import Volume

_MASK_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".png": "png"}
_IMAGE_FORMATS = {k: v for k, v in _MASK_FORMATS.items() if v != "png"}
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_FILE_MODE = 0o644


def write_mask(
    path: str | os.PathLike, mask: np.ndarray, like: Volume | None = None, *, overwrite: bool = False
) -> list[Path]:
    """Write a label mask.

    Args:
        path: ``.tif``/``.tiff`` (one multi-page stack), ``.nii``/``.nii.gz`` (on ``like``'s own
            voxel grid with its affine when it came from NIfTI/DICOM), ``.npy`` or ``.png``
            (S == 1: that file; S > 1: ``STEM_0000.png`` ... beside it). Missing folders are created.
        mask: ``(S, H, W)`` (or ``(H, W)``) non-negative integers or bools on the display grid.
        like: the Volume the mask belongs to (shape check, spacing, affine).
        overwrite: replace existing files instead of raising WriteError.

    Returns:
        The paths written. Values are stored as uint8 when max < 256, else uint16 (uint32 beyond).
    """
    path = Path(path)
    fmt = _format_of(path, _MASK_FORMATS, "a mask")
    stack = _as_mask_stack(mask, path)
    _check_like(stack, like, path)
    if fmt == "png":
        return _write_png(path, stack, overwrite)
    return _write_single(path, fmt, stack, like, overwrite)


def write_image(
    path: str | os.PathLike, data: np.ndarray, like: Volume | None = None, *, overwrite: bool = False
) -> list[Path]:
    """Write a float image (e.g. a probability heatmap) as float32 ``.tif``/``.tiff``, ``.nii``/``.nii.gz`` or ``.npy``.

    Args:
        data: ``(S, H, W)`` (or ``(H, W)``) real values on the display grid; NaN is kept.
        like, overwrite: as for :func:`write_mask`.

    Returns:
        The one path written.
    """
    path = Path(path)
    fmt = _format_of(path, _IMAGE_FORMATS, "a float image")
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise WriteError(
            f"Cannot write '{path}': the image must be a non-empty real (S, H, W) array, got {arr.dtype} {arr.shape}."
        )
    stack = arr.astype(np.float32)
    _check_like(stack, like, path)
    return _write_single(path, fmt, stack, like, overwrite)


def _format_of(path: Path, formats: dict[str, str], what: str) -> str:
    name = path.name.lower()
    for extension, fmt in formats.items():
        if name.endswith(extension):
            return fmt
    raise WriteError(f"Cannot write {what} to '{path}': use one of the extensions {', '.join(formats)}.")


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


def _check_targets(targets: list[Path], overwrite: bool) -> None:
    """Fail before writing anything when a target exists (and overwrite is off) or is a folder."""
    for target in targets:
        if target.is_dir():
            raise WriteError(f"Cannot write '{target}': a folder of that name exists.")
        if target.exists() and not overwrite:
            raise WriteError(f"Cannot write '{target}': the file exists (pass overwrite=True to replace it).")


def _write_single(path: Path, fmt: str, stack: np.ndarray, like: Volume | None, overwrite: bool) -> list[Path]:
    """Write one TIFF / NIfTI / NPY file holding ``stack`` (S, H, W)."""
    _check_targets([path], overwrite)
    spacing = like.spacing if like is not None else (1.0, 1.0, 1.0)
    if fmt == "tiff":
        _atomic_write(path, lambda tmp: _save_tiff(tmp, stack, spacing))
    elif fmt == "nifti":
        image = to_nifti_image(stack, like)
        _atomic_write(path, image.to_filename)
    else:
        _atomic_write(path, lambda tmp: np.save(tmp, stack, allow_pickle=False))
    return [path]


def _save_tiff(target: Path, stack: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """One multi-page TIFF, spacing as ImageJ metadata in mm (cm resolution tags for other dtypes)."""
    slice_mm, row_mm, col_mm = spacing
    if stack.dtype in _IMAGEJ_DTYPES:
        # All six ImageJ axes spelled out: given (S, H, W), tifffile would squeeze H or W == 1 away.
        n_slices, height, width = stack.shape
        hyperstack = stack.reshape(1, n_slices, 1, height, width, 1)
        metadata = {"spacing": slice_mm, "unit": "mm", "axes": "TZCYXS"}
        tifffile.imwrite(
            target, hyperstack, imagej=True, photometric="minisblack",
            resolution=(1 / col_mm, 1 / row_mm), metadata=metadata,
        )
    else:
        tifffile.imwrite(
            target,
            stack,
            photometric="minisblack",
            resolution=(10 / col_mm, 10 / row_mm),
            resolutionunit=tifffile.RESUNIT.CENTIMETER,
        )


def _write_png(path: Path, stack: np.ndarray, overwrite: bool) -> list[Path]:
    """One PNG per slice: ``path`` itself when S == 1, else ``STEM_0000.png`` ... in its folder."""
    if stack.dtype == np.uint32:
        raise WriteError(f"Cannot write '{path}': PNG holds labels up to 65535 only (use .tif or .nii.gz).")
    if stack.shape[0] == 1:
        targets = [path]
    else:
        targets = [path.with_name(f"{path.stem}_{index:04d}.png") for index in range(stack.shape[0])]
    _check_targets(targets, overwrite)
    for target, plane in zip(targets, stack):
        image = Image.fromarray(plane)
        _atomic_write(target, lambda tmp, image=image: image.save(tmp, format="PNG"))
    return targets


def _atomic_write(target: Path, save: Callable[[Path], None]) -> None:
    """Call ``save`` on a temporary file beside ``target``, then move it into place.

    The temporary name ends with the target's extension because nibabel picks gzip from it.
    """
    folder = target.parent
    suffix = ".nii.gz" if target.name.lower().endswith(".nii.gz") else target.suffix
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
        os.close(handle)
    except (FileExistsError, NotADirectoryError) as exc:
        raise WriteError(f"Cannot write '{target}': part of the folder path '{folder}' is a file.") from exc
    except OSError as exc:
        reason = exc.strerror or exc
        raise WriteError(f"Cannot write '{target}': the folder '{folder}' is not writable ({reason}).") from exc
    tmp = Path(tmp_name)
    try:
        save(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes files private to the user
        os.replace(tmp, target)
    except OSError as exc:
        raise WriteError(f"Cannot write '{target}': {exc.strerror or exc}.") from exc
    finally:
        tmp.unlink(missing_ok=True)
