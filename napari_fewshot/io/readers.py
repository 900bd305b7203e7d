"""Entry points for reading: :func:`read_volume` (any supported image) and :func:`read_labels`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ReadError
from ._arrays import as_label_array, read_error, require_regular_file
from .dicom import read_dicom_series
from .formats import extensions, format_named, format_of
from .volume import Volume


def detect_format(path: str | os.PathLike) -> str:
    """Format name of a file from its extension, else from its first bytes (DICOM files often have none).

    Returns:
        ``"nifti" | "dicom" | "tiff" | "png" | "jpg" | "npy"``; ReadError when unknown.
    """
    path = Path(path)
    known = format_of(path, "read")
    if known is not None:
        return known.name
    fmt = _sniff(path)
    if fmt is None:
        supported = ", ".join(extensions("read"))
        raise read_error(path, f"its format is not recognised (supported: {supported}, or a DICOM folder)")
    return fmt


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a DICOM file: a .dcm/.dicom/.ima name, or the DICM marker at byte 128 (scanners often
    write files without an extension). Unreadable or unknown files are simply not DICOM."""
    try:
        return detect_format(path) == "dicom"
    except ReadError:
        return False


def _sniff(path: Path) -> str | None:
    """Format from magic bytes, or None; ReadError for a named pipe, socket or device (never opened)."""
    require_regular_file(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(348)
    except OSError as exc:
        raise read_error(path, f"the file cannot be opened ({exc.strerror or exc})") from exc
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[344:348] in (b"n+1\x00", b"n+2\x00"):
        return "nifti"
    return None


def read_volume(path: str | os.PathLike) -> Volume:
    """Read an image file, or a folder holding one DICOM series, onto the display grid.

    Args:
        path: a ``.nii``/``.nii.gz``, DICOM, TIFF, PNG, JPEG or NPY file, or a DICOM folder
            (for a folder with several series use :func:`read_dicom_series`).

    Returns:
        :class:`Volume` with data ``(S, H, W)`` or ``(S, H, W, 3)``.

    Raises:
        ReadError: missing path, a named pipe / socket / device, unknown format, corrupt file, several
            DICOM series, 4D/5D data, empty arrays, an image too large to segment (checked from its header,
            before its pixels are read: io/_arrays.py check_size).
    """
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as err:  # e.g. a name longer than the file system allows: Path.exists() raises for it
        raise read_error(path, err.strerror or str(err)) from err
    if not exists:
        raise read_error(path, "no such file or folder")
    if is_dir:
        return read_dicom_series(path)
    require_regular_file(path)
    return format_named(detect_format(path)).read(path)


def read_labels(path: str | os.PathLike, like: Volume | None = None) -> np.ndarray:
    """Read a label map onto the same display grid :func:`read_volume` gives its image.

    Args:
        path: any format :func:`read_volume` reads; float files must hold whole numbers.
        like: the image the labels belong to; its ``(S, H, W)`` must match.

    Returns:
        ``(S, H, W)`` integer array: uint8 / uint16 when the labels fit, else int32 / int64.
    """
    volume = read_volume(path)
    if volume.is_rgb:
        raise read_error(path, "it has colour pixels, so it is not a label map")
    labels = as_label_array(volume.data, path)
    if like is not None and labels.shape != like.data.shape[:3]:
        raise read_error(
            path,
            f"the label map is {labels.shape} (S, H, W) but the image is {like.data.shape[:3]}",
        )
    return labels
