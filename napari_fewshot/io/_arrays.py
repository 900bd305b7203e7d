"""Shared helpers: error messages and turning decoded pixel arrays into display stacks."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ReadError


def read_error(path: str | os.PathLike, reason: str) -> ReadError:
    """A :class:`ReadError` whose message is one sentence naming ``path``."""
    return ReadError(f"Cannot read '{os.fspath(path)}': {reason.rstrip('.')}.")


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
