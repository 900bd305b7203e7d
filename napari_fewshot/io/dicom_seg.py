"""DICOM SEG: a label mask written as a Segmentation object referring to the scan's own DICOM images, and read.

    save_dicom_seg("liver.dcm", labels, like=volume, classes=ClassTable({1: "liver"}))   # volume read from DICOM
    read_dicom_seg("liver.dcm")      # Volume: labels (S, H, W) on the display grid, meta["classes"] its ClassTable

Written with highdicom: one BINARY segment per label value (in the mask or named), segment numbers 1..N in
value order; each segment has the class's name, its colour (recommended display CIELab), a coded property
(SNOMED CT for the names :data:`KNOWN_PROPERTIES` knows, e.g. liver, spleen, right kidney, lesion; "tissue"
otherwise), algorithm type SEMIAUTOMATIC and this tool's name and version, and the label value as its
tracking ID (so values like 1, 5, 52 come back as written). Every source slice gets a frame (empty ones
too), so the SEG's grid is the scan's grid. The scan's DICOM files are read again for their headers only
(``Volume.meta["source_files"]``, kept by :mod:`.dicom`).

Reading builds the label map on the grid of the SEG's frames (missing frames between the first and last
are empty) and puts it on the display grid like every DICOM image (:func:`.dicom.assemble`), so a SEG
lines up with its scan. Where segments overlap, the higher segment's value wins.
This module imports neither napari, Qt nor torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pydicom

from .. import __version__
from ..errors import WriteError
from ._arrays import describe, read_error
from .class_table import ClassTable
from .dicom import assemble, read_dicom_file
from .dicom_planes import SEG_SOP_CLASS_UID, Plane, functional_item, is_dicom_seg
from .orientation import to_file_grid
from .volume import Volume

TOOL_NAME = "napari-fewshot"
_TRACKING = re.compile(r"^napari-fewshot label (\d+)$")


# name (lower case, words joined by one space; "_" and "-" count as spaces) -> (category, type), SNOMED CT.
ORGAN = ("91772007", "Organ")
STRUCTURE = ("91723000", "Anatomical Structure")
ABNORMAL = ("49755003", "Morphologically Abnormal Structure")
TISSUE = ("85756007", "Tissue")
KNOWN_PROPERTIES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "liver": (ORGAN, ("10200004", "Liver")),
    "spleen": (ORGAN, ("78961009", "Spleen")),
    "kidney": (ORGAN, ("64033007", "Kidney")),
    "right kidney": (ORGAN, ("9846003", "Right kidney")),
    "left kidney": (ORGAN, ("18639004", "Left kidney")),
    "gallbladder": (ORGAN, ("28231008", "Gallbladder")),
    "pancreas": (ORGAN, ("15776009", "Pancreas")),
    "stomach": (ORGAN, ("69695003", "Stomach")),
    "urinary bladder": (ORGAN, ("89837001", "Urinary bladder")),
    "bladder": (ORGAN, ("89837001", "Urinary bladder")),
    "heart": (ORGAN, ("80891009", "Heart")),
    "lung": (ORGAN, ("39607008", "Lung")),
    "brain": (ORGAN, ("12738006", "Brain")),
    "prostate": (ORGAN, ("41216001", "Prostate")),
    "breast": (ORGAN, ("76752008", "Breast")),
    "aorta": (STRUCTURE, ("15825003", "Aorta")),
    "inferior vena cava": (STRUCTURE, ("64131007", "Inferior vena cava")),
    "portal vein": (STRUCTURE, ("32764006", "Portal vein")),
    "esophagus": (ORGAN, ("32849002", "Esophagus")),
    "duodenum": (ORGAN, ("38848004", "Duodenum")),
    "colon": (ORGAN, ("71854001", "Colon")),
    "small intestine": (ORGAN, ("30315005", "Small intestine")),
    "vertebra": (STRUCTURE, ("51282000", "Vertebra")),
    "bone": (TISSUE, ("272673000", "Bone")),
    "muscle": (TISSUE, ("71616004", "Muscle")),
    "lesion": (ABNORMAL, ("52988006", "Lesion")),
    "tumor": (ABNORMAL, ("108369006", "Neoplasm")),
    "tumour": (ABNORMAL, ("108369006", "Neoplasm")),
    "mass": (ABNORMAL, ("4147007", "Mass")),
    "cyst": (ABNORMAL, ("367643001", "Cyst")),
}
_SIDE_FIRST = re.compile(r"^(.*) (right|left)$")  # TotalSegmentator's kidney_right -> right kidney


def coded_property(name: str | None) -> tuple[tuple[str, str], tuple[str, str]]:
    """(category, type) as (SNOMED CT code, meaning) for a class name: liver, kidney_right, Right Kidney,
    "Lesion" ... are known (:data:`KNOWN_PROPERTIES`); any other name (or none) is generic tissue."""
    words = " ".join(re.sub(r"[_\-]+", " ", (name or "").lower()).split())
    words = _SIDE_FIRST.sub(r"\2 \1", words)
    return KNOWN_PROPERTIES.get(words) or KNOWN_PROPERTIES.get(words.rstrip("s")) or (TISSUE, TISSUE)


def save_dicom_seg(target: str | os.PathLike, stack: np.ndarray, like: Volume | None,
                   classes: ClassTable | None = None) -> None:
    """Write ``stack`` (S, H, W) labels of the DICOM scan `like` as a DICOM SEG at `target`.

    classes: names and colours per label value (a value without a name is called ``label N``).
    WriteError (one sentence) when `like` did not come from DICOM files with slice geometry.
    """
    import highdicom as hd

    classes = classes or ClassTable()
    sources, order = _source_images(like, Path(target))
    frames = to_file_grid(np.asarray(stack), like.meta).transpose(2, 1, 0)  # (K, rows, columns), K as sorted
    frames = frames[np.argsort(order)] if order is not None else frames  # a multi-frame source: its frame order
    values = sorted((set(int(v) for v in np.unique(frames)) - {0}) | set(classes.names))
    if not values:
        raise WriteError(f"Cannot write '{target}': the mask is empty and names no class, and a DICOM SEG needs "
                         "at least one segment.")
    pixels = np.stack([frames == value for value in values], axis=-1)  # (K, rows, columns, segments)
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name=TOOL_NAME, family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__)
    descriptions = [_description(number, value, classes, algorithm) for number, value in enumerate(values, 1)]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=_series_number(sources),
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=TOOL_NAME,
            manufacturer_model_name=TOOL_NAME, software_versions=__version__, device_serial_number="0",
            omit_empty_frames=False, series_description="napari-fewshot segmentation",
            content_label="FEWSHOT", content_description="few-shot segmentation, corrected by hand")
    except (ValueError, TypeError, AttributeError) as exc:
        raise WriteError(f"Cannot write '{target}' as DICOM SEG: {describe(exc)}.") from exc
    seg.save_as(os.fspath(target))


def _series_number(sources: list[pydicom.Dataset]) -> int:
    try:
        return int(sources[0].get("SeriesNumber") or 0) + 1000  # a number of its own, shown after the scan's
    except (TypeError, ValueError):
        return 1000


def _description(number: int, value: int, classes: ClassTable, algorithm):
    import highdicom as hd
    from pydicom.sr.coding import Code

    name = classes.names.get(value) or f"label {value}"
    category, kind = coded_property(name)
    colour = classes.colours.get(value)
    display = hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in colour[:3])) if colour else None
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=Code(category[0], "SCT", category[1]),
        segmented_property_type=Code(kind[0], "SCT", kind[1]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"{TOOL_NAME} label {value}",
        display_color=display)


def _source_images(like: Volume | None, target: Path) -> tuple[list[pydicom.Dataset], list[int] | None]:
    """The scan's DICOM headers (pixel data not read), in the order of its slices on the file grid, and for
    one multi-frame file the frame index of each slice (None for a series of single-frame files)."""
    files = (like.meta.get("source_files") if like is not None else None) or []
    if like is None or like.format != "dicom" or not files:
        raise WriteError(f"Cannot write '{target}': a DICOM SEG refers to the scan's DICOM images, and this scan "
                         "was not read from DICOM files; save it as NIfTI (.nii.gz) instead.")
    if "file_ornt" not in like.meta:
        raise WriteError(f"Cannot write '{target}': the DICOM scan has no slice position and orientation, which a "
                         "DICOM SEG needs; save it as NIfTI (.nii.gz) instead.")
    headers: dict[str, pydicom.Dataset] = {}
    for name in dict.fromkeys(files):
        try:
            headers[name] = pydicom.dcmread(name, stop_before_pixels=True)
        except Exception as exc:
            raise WriteError(f"Cannot write '{target}': the scan's DICOM file '{name}' cannot be read again "
                             f"({describe(exc)}); a DICOM SEG refers to it.") from exc
    _complete_identifiers(list(headers.values()))
    frames = like.meta.get("source_frames")
    if len(headers) == 1 and len(files) > 1:
        return list(headers.values()), list(frames or range(len(files)))
    return [headers[name] for name in files], None


def _complete_identifiers(headers: list[pydicom.Dataset]) -> None:
    """Fill, in memory, identifiers some exports leave empty in the dataset: the SOP class and instance UIDs
    from the file meta header (where the standard also keeps them), and one study UID for all when none."""
    import highdicom as hd

    study = next((str(ds.StudyInstanceUID) for ds in headers if ds.get("StudyInstanceUID")), None) or hd.UID()
    for ds in headers:
        meta = getattr(ds, "file_meta", None) or {}
        for tag, meta_tag in (("SOPClassUID", "MediaStorageSOPClassUID"),
                              ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not ds.get(tag) and meta.get(meta_tag):
                setattr(ds, tag, meta[meta_tag].value)
        if not ds.get("StudyInstanceUID"):
            ds.StudyInstanceUID = study


def read_dicom(path: str | os.PathLike) -> Volume:
    """One DICOM file: a SEG as its label map (:func:`read_dicom_seg`), any other as an image
    (:func:`.dicom.read_dicom_file`, which also says why a file is not readable)."""
    try:
        ds = pydicom.dcmread(os.fspath(path), stop_before_pixels=True)
    except Exception:
        ds = None
    return read_dicom_seg(path) if ds is not None and is_dicom_seg(ds) else read_dicom_file(path)


def read_dicom_seg(path: str | os.PathLike) -> Volume:
    """A DICOM SEG as a label map: Volume ``(S, H, W)`` uint8/uint16 on the display grid, ``format`` "dicom",
    ``meta["classes"]`` the :class:`ClassTable` of its segments (name = segment label, colour)."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(os.fspath(path))
        frames = np.asarray(seg.pixel_array)
    except Exception as exc:
        raise read_error(path, f"it is not a readable DICOM SEG ({describe(exc)})") from exc
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    values, classes = _segment_values(seg)
    planes: dict[tuple, Plane] = {}
    labels: dict[tuple, np.ndarray] = {}
    for index in range(frames.shape[0]):
        number = int(functional_item(seg, index, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        position = np.array([float(v) for v in
                             functional_item(seg, index, "PlanePositionSequence").ImagePositionPatient])
        key = tuple(np.round(position, 3))
        if key not in planes:
            labels[key] = np.zeros(frames.shape[1:], np.uint16 if max(values.values()) > 255 else np.uint8)
            planes[key] = _plane(seg, path, position, labels[key])
        labels[key][frames[index] > 0] = values[number]
    if not planes:
        raise read_error(path, "the DICOM SEG holds no frames")
    volume = assemble(_fill_gaps(list(planes.values()), frames.shape[1:]), path,
                      {"modality": "SEG", "series_uid": str(seg.get("SeriesInstanceUID", "")), "n_files": 1})
    volume.meta["classes"] = classes
    del volume.meta["source_files"]  # its slices are the SEG's own frames, not images a SEG could refer to
    return volume


def seg_classes(path: str | os.PathLike) -> ClassTable | None:
    """The names and colours of the segments of the DICOM SEG at `path` (its header only); None for any other
    file (or one that cannot be read: its reader says why)."""
    try:
        ds = pydicom.dcmread(os.fspath(path), stop_before_pixels=True)
    except Exception:
        return None
    return _segment_values(ds)[1] if is_dicom_seg(ds) and "SegmentSequence" in ds else None


def _segment_values(seg) -> tuple[dict[int, int], ClassTable]:
    """segment number -> label value (from this tool's tracking ID, else the segment number), and the names
    and colours per label value."""
    values, names, colours = {}, {}, {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _TRACKING.match(str(item.get("TrackingID", "")))
        value = values[number] = int(match.group(1)) if match else number
        names[value] = str(item.get("SegmentLabel", "") or f"segment {number}")
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            import highdicom as hd

            colours[value] = tuple(c / 255 for c in hd.color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True))
    return values, ClassTable(names, colours)


def _plane(seg, path: Path, position: np.ndarray, pixels: np.ndarray) -> Plane:
    orientation = functional_item(seg, 0, "PlaneOrientationSequence").ImageOrientationPatient
    orientation = np.array([float(v) for v in orientation])
    measures = functional_item(seg, 0, "PixelMeasuresSequence")
    spacing = [float(v) for v in measures.PixelSpacing]
    thickness = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
    return Plane(pixels=lambda: pixels, source=path, position=position, orientation=orientation,
                 pixel_spacing=(spacing[0], spacing[1]), thickness=float(thickness) if thickness else None)


def _fill_gaps(planes: list[Plane], shape: tuple[int, ...]) -> list[Plane]:
    """The planes plus empty ones where a SEG left out a frame between its first and last (an empty slice),
    so the grid is regular; spacing: SpacingBetweenSlices, else the smallest step between frames."""
    if len(planes) < 2:
        return planes
    normal = np.cross(planes[0].orientation[:3], planes[0].orientation[3:])
    planes = sorted(planes, key=lambda p: float(np.dot(p.position, normal)))
    offsets = np.array([np.dot(p.position, normal) for p in planes])
    step = planes[0].thickness or float(np.min(np.diff(offsets)))
    direction = normal * step if planes[0].thickness else (planes[1].position - planes[0].position)
    count = int(round((offsets[-1] - offsets[0]) / step)) + 1
    if count <= len(planes) or count > 4 * len(planes) + 1000:
        return planes
    taken = {int(round((o - offsets[0]) / step)) for o in offsets}
    empty = np.zeros(shape, np.uint8)
    return planes + [Plane(pixels=lambda: empty, source=planes[0].source, position=planes[0].position + k * direction,
                           orientation=planes[0].orientation, pixel_spacing=planes[0].pixel_spacing,
                           thickness=planes[0].thickness) for k in range(count) if k not in taken]


__all__ = ["KNOWN_PROPERTIES", "SEG_SOP_CLASS_UID", "coded_property", "is_dicom_seg", "read_dicom", "read_dicom_seg",
           "save_dicom_seg", "seg_classes"]
