"""The in-memory form of every image the package reads: :class:`Volume`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMATS = ("nifti", "dicom", "tiff", "png", "jpg", "npy")


@dataclass
class Volume:
    """An image on its display grid, plus what is needed to write results back beside it.

    Attributes:
        data: ``(S, H, W)`` grey or ``(S, H, W, 3)`` RGB; slices along axis 0. A single 2D
            image has ``S == 1``. For NIfTI and DICOM the grid is LPS+: slice 0 is inferior,
            row 0 anterior, column 0 the patient's right (radiological view).
        spacing: voxel size in mm along ``(slice, row, col)``; ``(1.0, 1.0, 1.0)`` when the
            file states none.
        affine: ``4 x 4`` map from the FILE's own voxel indices to world (RAS) coordinates,
            nibabel convention; ``None`` for plain images.
        source: the path it was read from, if any.
        format: one of ``"nifti" | "dicom" | "tiff" | "png" | "jpg" | "npy"``.
        meta: what the writers need to put a mask back on the file's own grid
            (``file_shape``, ``file_ornt``, ``display_affine`` for NIfTI/DICOM, ...).
    """

    data: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None
    source: str | None = None
    format: str = "npy"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        is_grey = self.data.ndim == 3
        is_rgb = self.data.ndim == 4 and self.data.shape[-1] == 3
        if not (is_grey or is_rgb):
            raise ValueError(f"Volume data must be (S, H, W) or (S, H, W, 3), got {self.data.shape}")
        if self.format not in FORMATS:
            raise ValueError(f"Volume format must be one of {FORMATS}, got {self.format!r}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != 3:
            raise ValueError(f"Volume spacing must have 3 values, got {self.spacing}")

    @property
    def is_rgb(self) -> bool:
        """True when ``data`` is ``(S, H, W, 3)``."""
        return self.data.ndim == 4

    @property
    def n_slices(self) -> int:
        """Number of slices ``S`` (1 for a single 2D image)."""
        return int(self.data.shape[0])
