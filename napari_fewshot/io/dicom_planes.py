"""DICOM planes: one 2D image of a series (a file, or one frame of a multi-frame file) and its geometry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ._arrays import describe, read_error


@dataclass
class Plane:
    """One 2D image of a series: where it lies and how to get its pixels ``(R, C[, 3])``."""

    pixels: Callable[[], np.ndarray]
    source: Path
    position: np.ndarray | None  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray | None  # ImageOrientationPatient, 6 direction cosines
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) in mm
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None
    number: int = 0
    acquisition: int | None = None  # AcquisitionNumber: two acquisitions must not be stacked as one
    frame: int | None = None  # the frame of a multi-frame file (None: a single-frame file)


def _floats(value, count: int) -> np.ndarray | None:
    """A DICOM multi-value as a float array of ``count`` values, or None when absent/malformed."""
    if value is None:
        return None
    try:
        out = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.isfinite(out).all() else None


def _float(value, default: float | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _whole(value) -> int | None:
    """A DICOM IS value as an int, or None when absent/malformed."""
    number = _float(value, None)
    return int(number) if number is not None and np.isfinite(number) else None


def plane_from_file(path: Path, ds: pydicom.Dataset) -> Plane:
    """The plane of a single-frame file; pixels are decoded only when asked for."""
    spacing = _floats(ds.get("PixelSpacing"), 2)
    return Plane(
        pixels=lambda: ds.pixel_array,
        source=path,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=None if spacing is None else (spacing[0], spacing[1]),
        slope=_float(ds.get("RescaleSlope"), 1.0),
        intercept=_float(ds.get("RescaleIntercept"), 0.0),
        thickness=_float(ds.get("SpacingBetweenSlices"), None) or _float(ds.get("SliceThickness"), None),
        number=int(_float(ds.get("InstanceNumber"), 0.0)),
        acquisition=_whole(ds.get("AcquisitionNumber")),
    )


def functional_item(ds: pydicom.Dataset, frame: int, sequence: str):
    """First item of ``sequence`` for one frame of an enhanced multi-frame file (per-frame, else shared)."""
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_name)
        if not groups:
            continue
        group = groups[frame] if groups_name.startswith("PerFrame") and frame < len(groups) else groups[0]
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def planes_from_frames(path: Path, ds: pydicom.Dataset, n_frames: int) -> list[Plane]:
    """One plane per frame; geometry from the enhanced functional groups or top-level tags."""
    try:
        frames = ds.pixel_array
    except Exception as exc:
        raise read_error(path, f"its pixel data cannot be decoded ({describe(exc)})") from exc
    base = plane_from_file(path, ds)
    planes = []
    for index in range(min(n_frames, frames.shape[0])):
        position = functional_item(ds, index, "PlanePositionSequence")
        orientation = functional_item(ds, index, "PlaneOrientationSequence")
        measures = functional_item(ds, index, "PixelMeasuresSequence")
        rescale = functional_item(ds, index, "PixelValueTransformationSequence")
        spacing = _floats(measures.get("PixelSpacing"), 2) if measures else None
        planes.append(
            Plane(
                pixels=lambda index=index: frames[index],
                source=path,
                position=_floats(position.get("ImagePositionPatient"), 3) if position else None,
                orientation=_floats(orientation.get("ImageOrientationPatient"), 6) if orientation else None,
                pixel_spacing=(spacing[0], spacing[1]) if spacing is not None else base.pixel_spacing,
                slope=_float(rescale.get("RescaleSlope"), 1.0) if rescale else base.slope,
                intercept=_float(rescale.get("RescaleIntercept"), 0.0) if rescale else base.intercept,
                thickness=_float(measures.get("SliceThickness"), None) if measures else base.thickness,
                number=index,
                acquisition=base.acquisition,
                frame=index,
            )
        )
    # A cine loop has no per-frame positions: keep the frame order and no affine.
    if any(p.position is None for p in planes):
        for plane in planes:
            plane.position = None
    return planes


SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_seg(ds: pydicom.Dataset) -> bool:
    """True for a DICOM Segmentation object (its SOP class, or Modality SEG): a label map, not an image."""
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID or str(ds.get("Modality", "")) == "SEG"


def frame_count(ds: pydicom.Dataset) -> int:
    """NumberOfFrames, 1 when absent or malformed."""
    return max(int(_float(ds.get("NumberOfFrames"), 1.0) or 1), 1)
