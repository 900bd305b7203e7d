"""DICOM: a series folder (one slice per file) or one file (single- or multi-frame) -> Volume.

Slices are sorted along the slice normal, rescaled to modality units (HU for CT) and given a
RAS affine for the grid ``(column, row, slice)``, then reoriented onto the display grid exactly
like NIfTI (see :mod:`.orientation`), so DICOM images line up with NIfTI label maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ._arrays import check_size, describe, finish_stack, read_error
from .dicom_planes import Plane, frame_count, is_dicom_seg, plane_from_file, planes_from_frames
from .orientation import to_display
from .volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SAME_POSITION_MM = 1e-3


def list_dicom_series(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """Group the DICOM image files directly inside ``folder`` by SeriesInstanceUID.

    Non-DICOM files and DICOM files without pixels (DICOMDIR, reports) are skipped.

    Returns:
        ``{series_uid: [files]}`` (the UID may be ``""`` when the files lack one).
    """
    return {uid: [path for path, _ in items] for uid, items in _scan_folder(Path(folder)).items()}


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one series from a folder of DICOM files.

    Args:
        folder: directory holding the files (not searched recursively).
        series_uid: which SeriesInstanceUID to read; may be omitted when the folder holds one.

    Returns:
        Volume on the display grid: ``(S, H, W)`` int16 HU / float32 for CT, or
        ``(S, H, W, 3)`` for colour; ``affine`` maps ``(column, row, slice)`` to RAS.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise read_error(folder, "the folder does not exist")
    series = _scan_folder(folder)
    if not series:
        raise read_error(folder, "the folder holds no DICOM image files (for a folder of 2D images use list_images)")
    if series_uid is None:
        if len(series) > 1:
            listing = ", ".join(_describe_series(uid, items) for uid, items in series.items())
            raise read_error(
                folder,
                f"the folder holds {len(series)} DICOM series ({listing}); "
                "pick one with read_dicom_series(folder, series_uid=...)",
            )
        series_uid = next(iter(series))
    if series_uid not in series:
        raise read_error(folder, f"no series with SeriesInstanceUID {series_uid!r} in the folder")
    items = series[series_uid]
    if len(items) == 1:
        return read_dicom_file(items[0][0])
    _check_series_size(folder, [ds for _, ds in items])
    planes = []
    for path, ds in items:
        if frame_count(ds) > 1:
            raise read_error(path, "a series of several multi-frame files cannot be stacked; open one file")
        planes.append(plane_from_file(path, ds))
    meta = _series_meta(items[0][1], len(items))
    return assemble(planes, folder, meta)


def read_dicom_file(path: str | os.PathLike) -> Volume:
    """Read one DICOM file: a single slice -> ``S == 1``; a multi-frame file -> one slice per frame."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, defer_size="1 KB")  # the pixel data is read when decoded, after the size check
    except Exception as exc:
        raise read_error(path, f"it is not a readable DICOM file ({describe(exc)})") from exc
    if "PixelData" not in ds:
        raise read_error(path, "the DICOM file holds no pixel data (it is not an image, or it is truncated)")
    _check_series_size(path, [ds])
    n_frames = frame_count(ds)
    if n_frames == 1:
        planes = [plane_from_file(path, ds)]
    else:
        planes = planes_from_frames(path, ds, n_frames)
    return assemble(planes, path, _series_meta(ds, 1))


def _scan_folder(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """``{series_uid: [(file, header)]}`` for DICOM image files in ``folder``, in name order."""
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except (InvalidDicomError, EOFError):
            continue  # not DICOM (or too short to be): other files may sit beside a series
        except Exception as exc:
            raise read_error(path, f"the DICOM header cannot be parsed ({describe(exc)})") from exc
        if "Rows" in ds and "Columns" in ds and not is_dicom_seg(ds):  # a SEG beside its series is no slice
            series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((path, ds))
    return series


def _check_series_size(source: Path, headers: list[pydicom.Dataset]) -> None:
    """:func:`check_size` of the images the headers declare (Rows x Columns, NumberOfFrames per file), before
    any pixel data is read or decoded; malformed sizes are left to the decoder to refuse."""
    try:
        rows = max(int(ds.Rows) for ds in headers)
        columns = max(int(ds.Columns) for ds in headers)
    except (AttributeError, TypeError, ValueError):
        return
    check_size(source, sum(frame_count(ds) for ds in headers), rows, columns)


def _describe_series(uid: str, items: list) -> str:
    count = len(items)
    return f"{uid or '<no UID>'} ({count} file{'' if count == 1 else 's'})"


def _series_meta(ds: pydicom.Dataset, n_files: int) -> dict:
    return {
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "photometric": str(ds.get("PhotometricInterpretation", "") or ""),
        "n_files": n_files,
    }


def assemble(planes: list[Plane], source: Path, meta: dict) -> Volume:
    """Sort planes, decode pixels, rescale and reorient into a Volume. ``meta["source_files"]`` (and, for a
    multi-frame file, ``meta["source_frames"]``) name the file (frame) of each slice in sorted order, the
    slices a DICOM SEG of the scan refers to (:mod:`.dicom_seg`)."""
    has_geometry = all(p.position is not None and p.orientation is not None for p in planes)
    if has_geometry:
        planes = _sort_along_normal(planes, source)
    elif len({p.source for p in planes}) > 1:
        planes = sorted(planes, key=lambda p: p.number)
    meta["source_files"] = [os.fspath(p.source) for p in planes]
    if any(p.frame is not None for p in planes):
        meta["source_frames"] = [p.frame for p in planes]
    stack = _decode(planes)
    is_rgb = stack.ndim == 4
    if not is_rgb:
        stack = _rescale(stack, planes)
    stack = finish_stack(stack, source, channels=is_rgb)
    row_mm, col_mm = planes[0].pixel_spacing or (1.0, 1.0)
    if not has_geometry:
        slice_mm = planes[0].thickness or 1.0
        return Volume(stack, (slice_mm, row_mm, col_mm), None, os.fspath(source), "dicom", meta)

    affine = _LPS_TO_RAS @ _lps_affine(planes, row_mm, col_mm)
    grid = stack.transpose((2, 1, 0) + tuple(range(3, stack.ndim)))  # (column, row, slice[, 3])
    try:
        data, spacing, orient_meta = to_display(grid, affine)
    except ValueError as exc:
        raise read_error(source, f"the slice geometry cannot be used ({exc})") from exc
    meta.update(orient_meta, qform_code=1, sform_code=1)  # scanner coordinates
    return Volume(data, spacing, affine, os.fspath(source), "dicom", meta)


def _sort_along_normal(planes: list[Plane], source: Path) -> list[Plane]:
    """Planes ordered by position along the slice normal. ReadError (one sentence) for what is not one volume
    on a regular grid: mixed orientations, acquisitions at overlapping positions, stacked duplicates, uneven
    spacing (a missing slice)."""
    orientation = planes[0].orientation
    if any(not np.allclose(p.orientation, orientation, atol=1e-4) for p in planes):
        raise read_error(source, "its slices have different orientations (a localizer or several stacks)")
    normal = np.cross(orientation[:3], orientation[3:])
    planes = sorted(planes, key=lambda p: float(np.dot(p.position, normal)))
    offsets = np.array([np.dot(p.position, normal) for p in planes])
    _refuse_overlapping_acquisitions(planes, offsets, source)
    if len(planes) > 1 and np.min(np.diff(offsets)) < _SAME_POSITION_MM:
        raise read_error(
            source,
            "several images lie at the same position (a 4D series with time points or echoes), "
            "which cannot be shown as one stack",
        )
    _refuse_uneven_spacing(planes, offsets, source)
    return planes


def _refuse_overlapping_acquisitions(planes: list[Plane], offsets: np.ndarray, source: Path) -> None:
    """ReadError when planes of different AcquisitionNumbers lie in overlapping ranges along the normal (two
    scans under one series UID, interleaved or repeated). Acquisitions one after the other (step-and-shoot
    CT numbers each table position) are one volume and pass."""
    ranges: dict[int, list[float]] = {}
    for plane, offset in zip(planes, offsets):
        if plane.acquisition is not None:
            low_high = ranges.setdefault(plane.acquisition, [offset, offset])
            low_high[0], low_high[1] = min(low_high[0], offset), max(low_high[1], offset)
    spans = sorted(ranges.values())
    if any(later[0] <= earlier[1] + _SAME_POSITION_MM for earlier, later in zip(spans, spans[1:])):
        numbers = ", ".join(str(n) for n in sorted(ranges))
        raise read_error(source, f"its slices come from {len(ranges)} acquisitions (AcquisitionNumber {numbers}) at "
                                 "overlapping positions, which would be stacked as one wrong volume; put each "
                                 "acquisition's files in a folder of its own")


def _refuse_uneven_spacing(planes: list[Plane], offsets: np.ndarray, source: Path) -> None:
    """ReadError naming the first place where the slices are not evenly spaced (a missing slice, or a
    spacing that changes): napari and NIfTI need a regular grid, and stacking them at their mean spacing
    would put every slice after the gap at the wrong height. Refused rather than filled, so no slice is
    invented. The spacing is the typical step among the smallest ones; tolerance 10% of it (at least 0.1 mm, at
    most half the spacing)."""
    if len(planes) < 3:
        return
    steps = np.diff(offsets)
    smallest = float(steps.min())  # with slices missing, the series' own spacing is the smallest step
    step = float(np.median(steps[steps <= smallest + min(max(0.1 * smallest, 0.1), 0.5 * smallest)]))
    tolerance = min(max(0.1 * step, 0.1), 0.5 * step)
    uneven = np.flatnonzero(np.abs(steps - step) > tolerance)
    if not len(uneven):
        return
    first = int(uneven[0])
    gap = float(steps[first])
    missing = round(gap / step) - 1
    if missing >= 1 and abs(gap - (missing + 1) * step) <= tolerance * (missing + 1):
        why = "a slice is missing" if missing == 1 else f"{missing} slices are missing"
    else:
        why = "they are not evenly spaced"
    more = f" (and {len(uneven) - 1} more such place{'s' if len(uneven) > 2 else ''})" if len(uneven) > 1 else ""
    raise read_error(
        source,
        f"its slices are {_mm(step)} mm apart but {_mm(gap)} mm apart between {_mm(offsets[first])} and "
        f"{_mm(offsets[first + 1])} mm along the slice normal (after {planes[first].source.name}){more}, so "
        f"{why}; a volume needs evenly spaced slices: export the complete series again",
    )


def _mm(value: float) -> str:
    return f"{round(float(value), 3):g}"


def _lps_affine(planes: list[Plane], row_mm: float, col_mm: float) -> np.ndarray:
    """4x4 LPS affine of the grid ``(column i, row j, slice k)``, slices already sorted."""
    orientation = planes[0].orientation
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (i grows), along a column (j grows)
    if len(planes) > 1:
        # the first-to-last vector keeps gantry tilt, which the normal alone would lose
        step = (planes[-1].position - planes[0].position) / (len(planes) - 1)
    else:
        step = np.cross(row_dir, col_dir) * (planes[0].thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_mm
    affine[:3, 1] = col_dir * row_mm
    affine[:3, 2] = step
    affine[:3, 3] = planes[0].position
    return affine


def _decode(planes: list[Plane]) -> np.ndarray:
    """Stack the planes' pixels: ``(S, R, C)`` or ``(S, R, C, 3)``."""
    arrays = []
    for plane in planes:
        try:
            arrays.append(np.asarray(plane.pixels()))
        except Exception as exc:
            raise read_error(plane.source, f"its pixel data cannot be decoded ({describe(exc)})") from exc
        if arrays[-1].shape != arrays[0].shape:
            raise read_error(
                plane.source, f"its image is {arrays[-1].shape} but the series' first is {arrays[0].shape}"
            )
    return np.stack(arrays)


def _rescale(stack: np.ndarray, planes: list[Plane]) -> np.ndarray:
    """Apply RescaleSlope/Intercept per slice; int16 when exact and in range, else float32."""
    slopes = np.array([p.slope for p in planes], dtype=float)
    intercepts = np.array([p.intercept for p in planes], dtype=float)
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return stack
    if stack.dtype.kind in "iu" and np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)):
        shifted = stack.astype(np.int64) + intercepts.astype(np.int64)[:, None, None]
        if shifted.min() >= np.iinfo(np.int16).min and shifted.max() <= np.iinfo(np.int16).max:
            return shifted.astype(np.int16)
        return shifted.astype(np.int32)
    return (stack * slopes[:, None, None] + intercepts[:, None, None]).astype(np.float32)
