"""A small DICOM CT series made with pydicom from the CT sample that ships, for tests a fresh clone runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_fewshot.io import read_labels, read_volume
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SLICES = slice(86, 92)  # six slices of the sample through liver, spleen and both kidneys
_LPS = np.array([-1.0, -1.0, 1.0])


def write_series(folder: Path, data: np.ndarray, display_affine: np.ndarray, spacing) -> list[Path]:
    """One CT Image Storage file per display slice of `data` (S, H, W) int16, with the geometry the display
    affine (display index (s, r, c) -> RAS) gives: position of pixel (0, 0), row/column directions in LPS."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    along_row = _LPS * display_affine[:3, 2] / np.linalg.norm(display_affine[:3, 2])  # column index grows
    along_column = _LPS * display_affine[:3, 1] / np.linalg.norm(display_affine[:3, 1])  # row index grows
    paths = []
    for k, plane in enumerate(data):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_STORAGE, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.SeriesNumber, ds.InstanceNumber = "CT", "X1", "Test^Ct", 3, k + 1
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "1200", "", "", "1"
        ds.PatientBirthDate, ds.PatientSex, ds.Manufacturer = "", "O", "test"
        ds.ImagePositionPatient = [float(v) for v in _LPS * (display_affine @ [k, 0, 0, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*along_row, *along_column)]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[2])], float(spacing[0])
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = plane.astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_series(folder: Path, slices: slice = SLICES):
    """Write `slices` of the CT sample into `folder` as a DICOM series; returns (folder, its Volume as read,
    the sample's labels on it (S, H, W), the sample's organ names). The series reads back as the sample's
    slices on the same display grid (checked here)."""
    ct = read_volume(CT_IMAGE)
    data = ct.data[slices].astype(np.int16)
    affine = ct.meta["display_affine"] @ np.array(
        [[1, 0, 0, slices.start], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    write_series(folder, data, affine, ct.spacing)
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.data, data)
    labels = read_labels(CT_LABELS, like=ct)[slices]
    return folder, volume, labels, ct_class_names()
