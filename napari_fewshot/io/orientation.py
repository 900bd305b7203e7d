"""Between a file's own voxel grid and the display grid (LPS+, transposed to (z, y, x)).

The display grid puts slice 0 inferior, row 0 anterior and column 0 on the patient's right,
which is how radiologists look at axial slices. Both NIfTI and DICOM go through here, so an
image and its label map land on the same grid whatever voxel order each file was saved in.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

DISPLAY_AXCODES = ("L", "P", "S")


def _axes_xyz_to_zyx(ndim: int) -> tuple[int, ...]:
    """Transpose order swapping the first and third spatial axes, keeping trailing channels."""
    return (2, 1, 0) + tuple(range(3, ndim))


def to_display(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Reorient a file-grid array onto the display grid.

    Args:
        arr: ``(I, J, K)`` or ``(I, J, K, C)`` in the file's voxel order.
        affine: ``4 x 4`` voxel -> RAS world map of that grid.

    Raises:
        ValueError: the affine is degenerate (NaN, or an axis of zero length).

    Returns:
        ``(data, spacing, meta)``: data ``(S, H, W[, C])`` contiguous; spacing in mm along
        ``(slice, row, col)``; meta with ``file_shape``, ``file_ornt`` (nibabel ornt of the file)
        and ``display_affine`` (display index ``(s, r, c)`` -> RAS world).
    """
    file_shape = tuple(int(n) for n in arr.shape[:3])
    affine = np.asarray(affine, dtype=float)
    if not np.isfinite(affine).all():
        raise ValueError("the affine holds NaN or infinite values")
    file_ornt = io_orientation(affine)
    if np.isnan(file_ornt).any():
        raise ValueError("a voxel axis of the affine has zero length")
    xform = ornt_transform(file_ornt, axcodes2ornt(DISPLAY_AXCODES))
    lps = apply_orientation(arr, xform)
    data = np.ascontiguousarray(lps.transpose(_axes_xyz_to_zyx(lps.ndim)))

    lps_zooms = np.empty(3)
    lps_zooms[xform[:, 0].astype(int)] = voxel_sizes(affine)
    spacing = tuple(float(z) for z in lps_zooms[::-1])

    lps_affine = affine @ inv_ornt_aff(xform, file_shape)
    meta = {
        "file_shape": file_shape,
        "file_ornt": file_ornt,
        "display_affine": lps_affine[:, [2, 1, 0, 3]],
    }
    return data, spacing, meta


def to_file_grid(data: np.ndarray, meta: dict) -> np.ndarray:
    """Inverse of :func:`to_display`.

    Args:
        data: ``(S, H, W[, C])`` on the display grid.
        meta: the ``meta`` that :func:`to_display` returned for the source image.

    Returns:
        ``(I, J, K[, C])`` in the source file's voxel order (equal to ``meta['file_shape']``).
    """
    lps = data.transpose(_axes_xyz_to_zyx(data.ndim))
    xform = ornt_transform(axcodes2ornt(DISPLAY_AXCODES), np.asarray(meta["file_ornt"]))
    arr = np.ascontiguousarray(apply_orientation(lps, xform))
    if arr.shape[:3] != tuple(meta["file_shape"]):
        raise ValueError(f"display grid {data.shape[:3]} does not map onto file grid {meta['file_shape']}")
    return arr
