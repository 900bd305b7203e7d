"""The one naming rule for the files napari-fewshot writes: masks and heatmaps.

    cohort_mask_name("a/scan.jpg", "jpg")        # 'a/scan.png': the scan's path, the mask format of its source
    cohort_mask_name("a/series", "dicom")        # 'a/series.nii.gz': a DICOM folder
    mask_file_name("scan", ".nii.gz")            # 'scan_mask.nii.gz' (widget suggestion; image sets' NAME_mask.png)
    heatmap_name(heatmap_prefix(), 1, "Liver", ".nii.gz")       # 'heatmap_class1_liver.nii.gz'
    heatmap_name(heatmap_prefix("benign (1)"), 2, "", ".tif")   # 'benign (1)_heatmap_class2.tif'
    provenance_name("slice", ".nii.gz")          # 'provenance_slice.nii.gz' (segment --explain, beside heatmaps)

Heatmaps: ``PREFIX_classC_NAME.EXT``: the class id always (two classes never share a file, even when
their names slug alike), then the class name slugged (:func:`napari_fewshot.paths.slug`) when it has
one. PREFIX is ``heatmap`` for a folder of one scan's heatmaps (CLI, batch, demo), ``NAME_heatmap`` for
an image of an image set, and the name the user chose in the widget (suggested ``SCAN_heatmap``).
Extensions and formats come from :mod:`.formats`. This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..paths import slug
from .formats import Kind, format_for_source, format_of, known_extension

MASK_MARK = "mask"
HEATMAP_MARK = "heatmap"
PROVENANCE_MARK = "provenance"
PROVENANCE_MAPS = ("slice", "similarity")  # which support slice explains each voxel; the similarity to it


def split_extension(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of a file name, the extension being a registered one (``.nii.gz`` whole);
    ``(name, "")`` when it has none."""
    extension = known_extension(name)
    return name[: len(name) - len(extension)], extension


def cohort_mask_name(scan_name: str, source_format: str) -> str:
    """The mask of a batch scan, relative to the output folder: the scan's relative path `scan_name`
    with its extension kept (lower case) when its format holds masks, else the canonical extension of
    the mask format of its source (JPEG -> ``.png``); a DICOM folder gets that extension appended."""
    mask_format = format_for_source(source_format, "mask")
    if source_format == "dicom":
        return scan_name + mask_format.extension
    stem, extension = split_extension(scan_name)
    own = format_of(scan_name, "mask")
    return stem + (extension.lower() if own is not None and own.name == source_format else mask_format.extension)


def mask_file_name(stem: str, extension: str) -> str:
    """``STEM_mask.EXT``: a mask written beside (or for) the image ``STEM``."""
    return f"{stem}_{MASK_MARK}{extension}"


def heatmap_prefix(stem: str = "") -> str:
    """``STEM_heatmap``, or ``heatmap`` alone (a folder holding one scan's heatmaps)."""
    return f"{stem}_{HEATMAP_MARK}" if stem else HEATMAP_MARK


def heatmap_name(prefix: str, class_id: int, class_name: str | None, extension: str) -> str:
    """``PREFIX_classC_NAME.EXT``, or ``PREFIX_classC.EXT`` when the class has no name (or none left
    after slugging)."""
    label = slug(class_name or "")
    return f"{prefix}_class{int(class_id)}" + (f"_{label}" if label else "") + extension


def provenance_name(what: str, extension: str) -> str:
    """``provenance_WHAT.EXT``, WHAT one of :data:`PROVENANCE_MAPS`: ``slice`` (per voxel, the support slice
    whose prototype explains its prediction, -1 for none) and ``similarity`` (to that prototype)."""
    if what not in PROVENANCE_MAPS:
        raise ValueError(f"A provenance map is one of {PROVENANCE_MAPS}, not {what!r}.")
    return f"{PROVENANCE_MARK}_{what}{extension}"


def suggested_output(source: str | os.PathLike, source_format: str | None, kind: Kind) -> Path:
    """Where the widget suggests writing a mask / the heatmaps of the scan read from `source`: beside it,
    ``SCAN_mask.EXT`` / ``SCAN_heatmap.EXT`` (SCAN: the file name without its extension, or the DICOM
    folder's name), EXT the canonical extension of :func:`~.formats.format_for_source`."""
    source = Path(source)
    stem = split_extension(source.name)[0]
    fmt = format_for_source(source_format, kind)
    name = mask_file_name(stem, fmt.extension) if kind == "mask" else heatmap_prefix(stem) + fmt.extension
    return source.parent / name


__all__ = ["HEATMAP_MARK", "MASK_MARK", "PROVENANCE_MAPS", "PROVENANCE_MARK", "cohort_mask_name", "heatmap_name",
           "heatmap_prefix", "mask_file_name", "provenance_name", "split_extension", "suggested_output"]
