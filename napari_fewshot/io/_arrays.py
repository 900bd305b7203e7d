"""Shared helpers: error messages and turning decoded pixel arrays into display stacks."""

from __future__ import annotations

import os
import stat

import numpy as np

from ..errors import ReadError

# The largest image read (checked from its header, before any pixel is read). Every slice's scores, heatmaps
# and labels are computed at full resolution, so the work grows with the slice's pixels: a 12000 x 12000 PNG
# took 7 GB. 2**25 pixels (5792 x 5792) holds every clinical image (full-field mammograms are ~4096 x 5120);
# 2**30 voxels is a 512 x 512 x 4096 CT, 2 GiB as int16 and 4 GiB once normalised to float32.
MAX_SLICE_PIXELS = 1 << 25
MAX_VOXELS = 1 << 30
MIN_SIDE = 8  # the smallest side of a slice that can be segmented: below it a stride-8 encoder sees nothing


def read_error(path: str | os.PathLike, reason: str) -> ReadError:
    """A :class:`ReadError` whose message is one sentence naming ``path``."""
    return ReadError(f"Cannot read '{os.fspath(path)}': {reason.rstrip('.')}.")


def check_size(path: str | os.PathLike, slices: int, rows: int, columns: int) -> None:
    """ReadError (one sentence naming the size and the limits) when an image of ``slices`` x ``rows`` x
    ``columns`` is over :data:`MAX_SLICE_PIXELS` per slice or :data:`MAX_VOXELS` in all; called with the
    sizes from the file's header, before its pixels are read."""
    if rows * columns > MAX_SLICE_PIXELS or slices * rows * columns > MAX_VOXELS:
        raise too_large(path, f"{slices} x {rows} x {columns} (slices x rows x columns)")


def too_large(path: str | os.PathLike, size: str) -> ReadError:
    """The ReadError of an image of `size` (e.g. ``"1 x 12000 x 12000 (slices x rows x columns)"``) over the
    limits :func:`check_size` applies."""
    side = int(MAX_SLICE_PIXELS**0.5)
    return read_error(path, f"it is {size}, too large to segment (at most {MAX_SLICE_PIXELS:,} pixels per slice, "
                            f"e.g. {side} x {side}, and {MAX_VOXELS:,} voxels); crop or downsample it first")


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why `path` (a symlink followed) must not be opened: "a named pipe (FIFO)", "a socket" or "a device",
    whose reading may never end; None for a regular file, a folder or a path that does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def require_regular_file(path: str | os.PathLike) -> None:
    """ReadError (one sentence) when `path` is a named pipe, socket or device (see :func:`not_a_regular_file`)."""
    what = not_a_regular_file(path)
    if what is not None:
        raise read_error(path, f"it is {what}, not a regular file, and reading it might never end")


def describe(exc: BaseException) -> str:
    """Short text for a library exception, kept on one line."""
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def clean_dtype(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Return ``arr`` with a dtype the rest of the package handles (bool -> uint8, float16 -> float32).

    Complex, object, string and structured arrays raise :class:`ReadError`.
    """
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind not in "iuf":
        raise read_error(path, f"pixel values of type {arr.dtype} are not supported (need integers or floats)")
    return arr


def finish_stack(arr: np.ndarray, path: str | os.PathLike, *, channels: bool) -> np.ndarray:
    """Normalise a decoded array to ``(S, H, W)`` grey or ``(S, H, W, 3)`` RGB.

    Args:
        arr: ``(S, H, W)``, or ``(S, H, W, C)`` when ``channels`` is true (C = 1..4).
        path: the file, for error messages.
        channels: whether the last axis holds colour/alpha samples.

    Alpha is dropped; grey+alpha (C = 2) and single-channel data become grey; RGB whose three
    channels are equal everywhere becomes grey.
    """
    if arr.size == 0:
        raise read_error(path, f"the image is empty (shape {arr.shape})")
    arr = clean_dtype(np.asarray(arr), path)
    if channels:
        n_channels = arr.shape[-1]
        if n_channels not in (1, 2, 3, 4):
            raise read_error(path, f"it has {n_channels} channels per pixel (expected grey, RGB or RGBA)")
        if n_channels <= 2:
            arr = arr[..., 0]
        else:
            arr = arr[..., :3]
            if _channels_equal(arr):
                arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def _channels_equal(rgb: np.ndarray) -> bool:
    """True when the R, G and B planes of ``rgb`` (..., 3) are identical."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def as_label_array(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Cast a label map to the smallest fitting integer type.

    Args:
        arr: any real array; floats must hold whole numbers only.

    Returns:
        Same shape, uint8 / uint16 when the values are >= 0 and fit, else int32 / int64.
    """
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise read_error(path, "the label map contains NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise read_error(path, "the label map contains non-integer values (is it an image rather than labels?)")
    elif arr.dtype.kind not in "iub":
        raise read_error(path, f"label values of type {arr.dtype} are not supported")
    if arr.size == 0:
        return arr.astype(np.uint8)
    low, high = arr.min(), arr.max()
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return arr.astype(dtype, copy=False)
    raise read_error(path, f"label values up to {high} do not fit a 64-bit integer")
