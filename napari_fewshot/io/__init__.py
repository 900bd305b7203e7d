"""File input/output: images and label maps in, masks and heatmaps out.

Everything is read onto one *display grid*, ``(S, H, W)`` or ``(S, H, W, 3)`` with slices along
axis 0; NIfTI and DICOM volumes are reoriented to LPS+ so that an image and its label map line
up whatever voxel order each file uses. Writers put results back on the source file's grid.
This package imports neither napari, Qt nor torch.
"""

from .dicom import list_dicom_series, read_dicom_series
from .folders import list_images, read_busi_mask
from .readers import detect_format, is_dicom_file, read_labels, read_volume
from .volume import Volume
from .writers import write_image, write_mask

__all__ = [
    "Volume",
    "detect_format",
    "is_dicom_file",
    "list_dicom_series",
    "list_images",
    "read_busi_mask",
    "read_dicom_series",
    "read_labels",
    "read_volume",
    "write_image",
    "write_mask",
]
