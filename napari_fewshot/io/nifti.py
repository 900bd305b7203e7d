"""NIfTI (.nii, .nii.gz) reading and writing through nibabel."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from ..errors import ReadError
from ._arrays import check_size, describe, finish_stack, read_error
from .orientation import to_display, to_file_grid
from .volume import Volume


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a NIfTI file onto the display grid.

    Returns:
        A Volume with data ``(S, H, W)`` (or ``(S, H, W, 3)`` for RGB24 files), the file's
        affine, and meta holding the orientation and the header's qform/sform codes.
    """
    try:
        img = nib.load(os.fspath(path))  # the header only
        _check_nifti_size(path, img.shape)
        arr = np.asanyarray(img.dataobj)
    except ReadError:
        raise
    except Exception as exc:  # nibabel raises many types for bad headers / truncated gzip
        raise read_error(path, f"it is not a readable NIfTI file ({describe(exc)})") from exc

    arr, channels = _file_layout(arr, path)
    arr = finish_stack(arr, path, channels=channels)
    try:
        data, spacing, meta = to_display(arr, img.affine)
    except ValueError as exc:
        raise read_error(path, f"its affine cannot be used ({exc})") from exc
    meta["qform_code"] = int(img.header["qform_code"])
    meta["sform_code"] = int(img.header["sform_code"])
    return Volume(data, spacing, np.array(img.affine, dtype=float), os.fspath(path), "nifti", meta)


def _check_nifti_size(path: str | os.PathLike, shape: tuple[int, ...]) -> None:
    """:func:`check_size` from the header's shape: which file axis becomes the displayed slice axis is known
    only after reorienting, so a slice is taken as large as the two largest of the first three axes."""
    spatial = sorted((list(shape[:3]) + [1, 1])[:3], reverse=True)
    volumes = int(np.prod(shape[3:], dtype=np.int64)) if len(shape) > 3 else 1
    check_size(path, spatial[2] * volumes, spatial[0], spatial[1])


def _file_layout(arr: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Bring a NIfTI array to ``(I, J, K)`` or ``(I, J, K, C)``; say whether C is present.

    Structured RGB24/RGBA32 voxels become a trailing channel axis; 2D images get K = 1;
    trailing singleton axes (a 4D file with one volume) are dropped. Real 4D data (several
    volumes) cannot be shown as one stack and raises ReadError.
    """
    channels = bool(arr.dtype.names)
    spatial = arr
    if channels:
        arr = np.stack([arr[name] for name in arr.dtype.names], axis=-1)
    if spatial.ndim < 2:
        raise read_error(path, f"it holds a {spatial.ndim}D array of shape {spatial.shape}, not an image")
    if spatial.ndim == 2:
        return arr[:, :, np.newaxis], channels
    while spatial.ndim > 3 and spatial.shape[-1] == 1:
        spatial = spatial[..., 0]
        arr = arr[..., 0, :] if channels else arr[..., 0]
    if spatial.ndim > 3:
        raise read_error(
            path,
            f"it holds {spatial.ndim}D data of shape {spatial.shape} (several volumes or components); "
            "save the one volume to segment as a 3D file",
        )
    return arr, channels


def to_nifti_image(display: np.ndarray, like: Volume | None) -> nib.Nifti1Image:
    """Build the NIfTI image to write for a display-grid array.

    Args:
        display: ``(S, H, W)`` on the display grid.
        like: the Volume it belongs to. When it came from NIfTI or DICOM the array is put back
            on that file's voxel grid and written with its affine and qform/sform codes.
            Otherwise the file gets an LPS affine scaled by ``like.spacing`` (or 1 mm), chosen
            so that :func:`read_nifti` gives ``display`` back unchanged.
    """
    if like is not None and like.affine is not None and "file_ornt" in like.meta:
        arr = to_file_grid(display, like.meta)
        img = nib.Nifti1Image(arr, np.asarray(like.affine, dtype=float))
        img.header.set_qform(like.affine, code=int(like.meta.get("qform_code", 1)))
        img.header.set_sform(like.affine, code=int(like.meta.get("sform_code", 1)))
    else:
        slice_mm, row_mm, col_mm = like.spacing if like is not None else (1.0, 1.0, 1.0)
        affine = np.diag([-col_mm, -row_mm, slice_mm, 1.0])  # x: toward L, y: toward P
        img = nib.Nifti1Image(np.ascontiguousarray(display.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    return img


def save_nifti(target: str | os.PathLike, stack: np.ndarray, like: Volume | None = None) -> None:
    """``stack`` (S, H, W) as a NIfTI file (``.nii.gz`` compressed by its name), on `like`'s own voxel grid
    with its affine when it came from NIfTI / DICOM (see :func:`to_nifti_image`)."""
    to_nifti_image(stack, like).to_filename(target)
