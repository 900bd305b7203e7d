"""Plain images without patient geometry: PNG / JPEG (Pillow), TIFF (tifffile) and NPY, read and saved.

The ``save_*`` functions write one file of an ``(S, H, W)`` stack to the path they are given (the
writers in :mod:`.writers` hand them a temporary file and rename it; see :mod:`.formats`)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import tifffile
from PIL import Image

from ..errors import ReadError
from ._arrays import check_size, describe, finish_stack, read_error, too_large
from .volume import Volume

# ImageJ / OME unit names -> millimetres per unit
_UNIT_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
    "um": 1e-3,
    "\u00b5m": 1e-3,  # micro sign
    "\u03bcm": 1e-3,  # Greek mu
    "\\u00b5m": 1e-3,  # ImageJ writes the escape literally
    "micron": 1e-3,
    "microns": 1e-3,
    "micrometer": 1e-3,
    "nm": 1e-6,
}
_TIFF_CENTIMETER = 3
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_NPY_MAX_CHANNELS = 4


def read_pil_image(path: str | os.PathLike, fmt: str) -> Volume:
    """Read a PNG or JPEG: ``(1, H, W)`` grey (also RGB with equal channels) or ``(1, H, W, 3)`` colour.

    16-bit PNGs stay uint16; 1-bit images become uint8 0/1; palettes are expanded.
    """
    try:
        with warnings.catch_warnings():  # check_size is the limit; Pillow's warning would be a second line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                check_size(path, 1, height, width)
                img.load()
                arr = _pil_to_array(img)
    except ReadError:
        raise
    except Image.DecompressionBombError as exc:  # refused by Pillow itself from the header (over ~179 M pixels)
        raise too_large(path, f"over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        raise read_error(path, f"it is not a readable {fmt.upper()} image ({describe(exc)})") from exc
    channels = arr.ndim == 3
    data = finish_stack(arr[np.newaxis], path, channels=channels)
    return Volume(data, (1.0, 1.0, 1.0), None, os.fspath(path), fmt, {})


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` pixels of a Pillow image, keeping 16-bit depth."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif img.mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)
    return np.asarray(img)


def read_tiff(path: str | os.PathLike) -> Volume:
    """Read a TIFF: ``(S, H, W)`` grey or ``(S, H, W, 3)`` RGB (alpha dropped).

    Spacing comes from ImageJ metadata (``spacing`` and resolution with ``unit``) or from
    resolution tags in centimetres; otherwise 1 mm.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_tiff_size(path, series.shape, series.axes)
            arr = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            is_rgb = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
            spacing = _tiff_spacing(page, tif.imagej_metadata)
    except ReadError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise read_error(path, f"it is not a readable TIFF file ({describe(exc)})") from exc
    arr, channels = _tiff_layout(arr, axes, is_rgb, path)
    data = finish_stack(arr, path, channels=channels)
    return Volume(data, spacing, None, os.fspath(path), "tiff", {"tiff_axes": axes})


def _check_tiff_size(path, shape: tuple[int, ...], axes: str) -> None:
    """:func:`check_size` from a TIFF series' shape and axes (``...YX[S]``), before its pixels are read."""
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        return  # not a stack of images: _tiff_layout says so
    rows, columns = shape[axes.index("Y")], shape[axes.index("X")]
    samples = shape[axes.index("S")] if "S" in axes else 1
    check_size(path, int(np.prod(shape, dtype=np.int64)) // max(rows * columns * samples, 1), rows, columns)


def _tiff_layout(arr: np.ndarray, axes: str, is_rgb: bool, path) -> tuple[np.ndarray, bool]:
    """Bring a TIFF series to ``(S, H, W)`` or ``(S, H, W, C)`` using its axes string."""
    if len(axes) != arr.ndim or not axes.endswith(("YX", "YXS")):
        raise read_error(path, f"its axes {axes!r} (shape {arr.shape}) are not a stack of 2D images")
    channels = is_rgb and "S" in axes
    if channels:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    n_plane_axes = 3 if channels else 2
    leading = arr.shape[: arr.ndim - n_plane_axes]
    extra = [n for n in leading if n > 1]
    if len(extra) > 1:
        raise read_error(
            path,
            f"it holds {arr.ndim}D data with axes {axes!r} and shape {arr.shape} (several stacks or "
            "channels); save one stack of 2D images",
        )
    n_slices = extra[0] if extra else 1
    return arr.reshape((n_slices,) + arr.shape[arr.ndim - n_plane_axes :]), channels


def _tiff_spacing(page, imagej: dict | None) -> tuple[float, float, float]:
    """``(slice, row, col)`` spacing in mm, or 1.0 where the file gives none."""
    try:
        x_res, y_res = (float(r) for r in page.resolution)
    except (TypeError, ValueError, ZeroDivisionError):
        return (1.0, 1.0, 1.0)
    mm_per_unit = None
    if imagej and isinstance(imagej.get("unit"), str):
        mm_per_unit = _UNIT_MM.get(imagej["unit"].strip().lower())
    elif page.resolutionunit == _TIFF_CENTIMETER:
        mm_per_unit = 10.0
    if mm_per_unit is None or x_res <= 0 or y_res <= 0:
        return (1.0, 1.0, 1.0)
    z = float(imagej.get("spacing", 1.0)) * mm_per_unit if imagej and "spacing" in imagej else 1.0
    return (z, mm_per_unit / y_res, mm_per_unit / x_res)


def read_npy(path: str | os.PathLike) -> Volume:
    """Read a ``.npy`` array: (H, W) -> (1, H, W); (S, H, W) as is; (S, H, W, 3|4) RGB(A).

    A 3D array is always a stack (so masks written by :func:`write_mask` read back unchanged);
    a single RGB image must be saved as ``(1, H, W, 3)``.
    """
    shape = _npy_shape(path)
    if shape is not None:  # checked from the header, before the pixels are read
        _check_npy_layout(path, shape)
        check_size(path, *((1, *shape) if len(shape) == 2 else shape[:3]))
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError for pickles / bad headers, EOFError, OSError
        raise read_error(path, f"it is not a readable NumPy array file ({describe(exc)})") from exc
    if not isinstance(arr, np.ndarray):
        raise read_error(path, "it holds several arrays (npz), not one image")
    _check_npy_layout(path, arr.shape)
    channels = arr.ndim == 4
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    data = finish_stack(arr, path, channels=channels)
    return Volume(data, (1.0, 1.0, 1.0), None, os.fspath(path), "npy", {})


def _check_npy_layout(path: str | os.PathLike, shape: tuple[int, ...]) -> None:
    """ReadError unless `shape` is (H, W), (S, H, W) or (S, H, W, C) with C <= 4."""
    if len(shape) not in (2, 3) and not (len(shape) == 4 and shape[-1] <= _NPY_MAX_CHANNELS):
        raise read_error(path, f"it holds an array of shape {shape} (expected (H, W), (S, H, W) or (S, H, W, 3))")


def _npy_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The array shape a ``.npy`` file's header declares; None when the header cannot be read (np.load
    then says why)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, _ = np.lib.format.read_array_header_2_0(handle)
            else:
                return None
    except Exception:  # a bad header: np.load names the problem
        return None
    return tuple(int(n) for n in shape)


def save_tiff(target: str | os.PathLike, stack: np.ndarray, like: Volume | None = None) -> None:
    """One multi-page TIFF of ``stack`` (S, H, W), `like`'s spacing as ImageJ metadata in mm (cm resolution
    tags for dtypes ImageJ cannot hold); 1 mm without `like`."""
    slice_mm, row_mm, col_mm = like.spacing if like is not None else (1.0, 1.0, 1.0)
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


def save_npy(target: str | os.PathLike, stack: np.ndarray, like: Volume | None = None) -> None:
    """``stack`` (S, H, W) as a ``.npy`` file (no pickle); `like` is not needed."""
    np.save(target, stack, allow_pickle=False)


def save_png(target: str | os.PathLike, stack: np.ndarray, like: Volume | None = None) -> None:
    """A one-slice ``stack`` (1, H, W) of uint8 / uint16 labels as one PNG; `like` is not needed."""
    if stack.shape[0] != 1:
        raise ValueError(f"a PNG holds one slice, got {stack.shape[0]}")
    Image.fromarray(stack[0]).save(target, format="PNG")


def read_png(path: str | os.PathLike) -> Volume:
    """:func:`read_pil_image` for a PNG file."""
    return read_pil_image(path, "png")


def read_jpg(path: str | os.PathLike) -> Volume:
    """:func:`read_pil_image` for a JPEG file."""
    return read_pil_image(path, "jpg")
