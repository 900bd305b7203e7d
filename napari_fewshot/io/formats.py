"""The one registry of file formats: what each extension is, what it can hold, and who reads and writes it.

    fmt = format_of("scan.nii.gz", "read")      # FileFormat nifti; None for an unknown extension
    format_of("seg.png", "mask").slices_per_file   # True: a volume becomes a folder of PNG slices
    extensions("heatmap")                       # ['.nii.gz', '.nii', '.tif', '.tiff', '.npy']
    qt_filter("mask")                           # "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;..."
    format_for_source("dicom", "mask")          # nifti: what a mask of a DICOM scan is written as

Every list of extensions in the package derives from :data:`FORMATS`: the writers (:mod:`.writers`),
the readers' extension lookup (:mod:`.readers`), the widget's save dialogs and the napari writer, the
batch's scan search, the CLI's ``--out`` help and (checked by a test) ``napari.yaml``.

A kind is what a file is asked to hold: ``"mask"`` (integer labels), ``"heatmap"`` (float32 values, e.g.
a similarity map) or ``"read"`` (an image or label map read in). An extension can name different formats
for different kinds (a DICOM SEG mask and a DICOM image are both ``.dcm``), so a lookup names its kind.

Adding a format is one :class:`FileFormat` line here plus its save (and read) function in its own module.
This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .dicom_seg import read_dicom, save_dicom_seg
from .images import read_jpg, read_npy, read_png, read_tiff, save_npy, save_png, save_tiff
from .nifti import read_nifti, save_nifti
from .volume import Volume

Kind = Literal["mask", "heatmap", "read"]
KINDS: tuple[Kind, ...] = ("mask", "heatmap", "read")
# save(target, stack, like): write ``stack`` (S, H, W) to the file `target` (one slice when
# slices_per_file); like: the Volume the data belongs to (grid, spacing, affine, DICOM source) or None.
Save = Callable[[Path, np.ndarray, Volume | None], None]
Read = Callable[[str | os.PathLike], Volume]


@dataclass(frozen=True)
class FileFormat:
    """One file format.

    name: the format's name, also ``Volume.format`` of what it reads (``"nifti"``, ``"tiff"`` ...).
    label: how dialogs call it (the Qt filter text before the patterns).
    extensions: lower-case, the first canonical (the one suggested and written when nothing else decides).
    holds_mask / holds_heatmap: it can store integer labels / float32 values.
    save / read: the functions writing one file / reading one file (None: it cannot).
    slices_per_file: one file holds one 2D slice; a volume becomes a folder of files (PNG).
    max_label: the largest label a mask file holds (None: 32 bits).
    needs_dicom_source: a mask is written only for a scan read from DICOM (DICOM SEG refers to its images).
    keeps_classes: the file itself holds the class names and colours (its save takes ``classes=``, a
        :class:`~.class_table.ClassTable`); other formats get the sidecar ``STEM.labels.json``.
    masks_as: the format a mask of a scan read in this format is written in, when not this one
        (DICOM -> NIfTI, JPEG -> PNG).
    napari_reader: the plugin's napari reader claims these files (napari reads PNG, JPEG and NPY itself).
    """

    name: str
    label: str
    extensions: tuple[str, ...]
    holds_mask: bool = False
    holds_heatmap: bool = False
    save: Save | None = None
    read: Read | None = None
    slices_per_file: bool = False
    max_label: int | None = None
    needs_dicom_source: bool = False
    keeps_classes: bool = False
    masks_as: str | None = None
    napari_reader: bool = False

    @property
    def extension(self) -> str:
        """The canonical extension (``".nii.gz"``, ``".tif"`` ...)."""
        return self.extensions[0]

    def holds(self, kind: Kind) -> bool:
        """True when this format can hold (for "read": be read as) `kind`."""
        if kind == "mask":
            return self.holds_mask and self.save is not None
        if kind == "heatmap":
            return self.holds_heatmap and self.save is not None
        if kind == "read":
            return self.read is not None
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")

    def filter_text(self) -> str:
        """This format as one Qt name filter: ``"NIfTI (*.nii.gz *.nii)"``."""
        return f"{self.label} ({' '.join('*' + e for e in self.extensions)})"


# The order is the order of dialogs' filters and of help texts: NIfTI first, the format of clinical volumes.
FORMATS: tuple[FileFormat, ...] = (
    FileFormat("nifti", "NIfTI", (".nii.gz", ".nii"), holds_mask=True, holds_heatmap=True,
               save=save_nifti, read=read_nifti, napari_reader=True),
    FileFormat("dicom", "DICOM", (".dcm", ".dicom", ".ima"), read=read_dicom, masks_as="nifti",
               napari_reader=True),
    # Read by the DICOM entry above (a .dcm file is a SEG or an image by its SOP class); written for DICOM scans only.
    FileFormat("dicom_seg", "DICOM SEG", (".dcm",), holds_mask=True, save=save_dicom_seg, needs_dicom_source=True,
               keeps_classes=True),
    FileFormat("tiff", "TIFF", (".tif", ".tiff"), holds_mask=True, holds_heatmap=True,
               save=save_tiff, read=read_tiff, napari_reader=True),
    FileFormat("png", "PNG, one file per slice", (".png",), holds_mask=True, save=save_png, read=read_png,
               slices_per_file=True, max_label=65535),
    FileFormat("jpg", "JPEG", (".jpg", ".jpeg"), read=read_jpg, masks_as="png"),
    FileFormat("npy", "NumPy", (".npy",), holds_mask=True, holds_heatmap=True, save=save_npy, read=read_npy),
)
# Where a scan's own format cannot hold a kind (a PNG image's heatmap): TIFF holds every kind, 2D and 3D.
FALLBACK_FORMAT = "tiff"


def format_named(name: str) -> FileFormat:
    """The registered format called `name`; ValueError for an unknown name."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown file format {name!r}; known: {', '.join(f.name for f in FORMATS)}")


def formats_for(kind: Kind, source_format: str | None = None) -> list[FileFormat]:
    """The formats that can hold `kind`, in registry order. Formats that need a DICOM source are left out
    unless `source_format` is ``"dicom"``."""
    return [f for f in FORMATS if f.holds(kind) and (not f.needs_dicom_source or source_format == "dicom")]


def format_of(path: str | os.PathLike, kind: Kind) -> FileFormat | None:
    """The format `kind` is read or written in at `path`, from its extension (case-insensitive, the
    longest one that matches); None when no format for `kind` has that extension."""
    name = Path(path).name.lower()
    matches = [(len(e), f) for f in FORMATS if f.holds(kind) for e in f.extensions if name.endswith(e)]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def known_extension(name: str) -> str:
    """The registered extension `name` ends with (any format, any kind; the longest), as written in
    `name`; ``""`` when none."""
    lower = name.lower()
    found = [e for f in FORMATS for e in f.extensions if lower.endswith(e)]
    return name[len(name) - max(map(len, found)):] if found else ""


def extensions(kind: Kind, source_format: str | None = None) -> list[str]:
    """Every extension of :func:`formats_for` ``(kind, source_format)``, canonical first per format."""
    return [e for f in formats_for(kind, source_format) for e in f.extensions]


def format_for_source(source_format: str | None, kind: Kind = "mask") -> FileFormat:
    """The format an output of `kind` gets for a scan read as `source_format` (``Volume.format``): the
    scan's own format (or its ``masks_as``) when that can hold `kind`, else TIFF (:data:`FALLBACK_FORMAT`).

    nifti, dicom -> nifti; tiff -> tiff; png, jpg -> png (masks) or tiff (heatmaps); npy -> npy; a scan
    from no file (None, or a name not registered) -> tiff.
    """
    if source_format in {f.name for f in FORMATS}:
        source = format_named(source_format)
        for name in (source.masks_as, source.name):
            if name and format_named(name).holds(kind):
                return format_named(name)
    return format_named(FALLBACK_FORMAT)


def qt_filter(kind: Kind, source_format: str | None = None) -> str:
    """The ``;;``-separated Qt name filters of a save dialog for `kind`: ``"NIfTI (*.nii.gz *.nii);;..."``."""
    return ";;".join(f.filter_text() for f in formats_for(kind, source_format))


def extensions_help(kind: Kind) -> str:
    """The canonical extensions for `kind` as help text: ``".nii.gz .tif .png .npy"`` (masks), with the
    formats that need a DICOM scan marked."""
    return " ".join(f.extension + (" (DICOM scans only)" if f.needs_dicom_source else "") for f in formats_for(
        kind, "dicom"))


def napari_reader_patterns() -> list[str]:
    """The file-name patterns the plugin's napari reader claims (``napari.yaml`` lists the same)."""
    return ["*" + e for f in FORMATS if f.napari_reader and f.read is not None for e in f.extensions]


__all__ = ["FALLBACK_FORMAT", "FORMATS", "KINDS", "FileFormat", "Kind", "extensions", "extensions_help",
           "format_for_source", "format_named", "format_of", "formats_for", "known_extension",
           "napari_reader_patterns", "qt_filter"]
