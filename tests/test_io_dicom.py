"""Reading DICOM with napari_fewshot.io: the real CT series (Hounsfield units, slice order, its label map
and NIfTI export), folders with several or no series, and synthetic multi-frame files."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_fewshot.errors import ReadError
from napari_fewshot.io import (
    Volume,
    detect_format,
    list_dicom_series,
    read_dicom_series,
    read_labels,
    read_volume,
    write_mask,
)

from shared_data import CT_DICOM as CT_DIR  # noqa: E402

DICOM_DIR = CT_DIR / "example_ct_dicom"
LIVER, AORTA = 5, 52


@pytest.fixture(scope="module")
def dicom_ct() -> Volume:
    return read_volume(DICOM_DIR)


@pytest.fixture(scope="module")
def dicom_labels(dicom_ct) -> np.ndarray:
    return read_labels(CT_DIR / "example_seg_dicom.nii.gz", like=dicom_ct)


def _fraction_in(values: np.ndarray, low: float, high: float) -> float:
    return float(np.mean((values > low) & (values < high)))


def test_dicom_series_reads_in_hounsfield_units(dicom_ct):
    assert dicom_ct.format == "dicom" and dicom_ct.data.shape == (20, 512, 512)
    assert dicom_ct.data.dtype == np.int16 and dicom_ct.data.min() == -1024
    assert dicom_ct.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert dicom_ct.affine.shape == (4, 4)


def test_axial_dicom_slices_are_shown_as_stored_inferior_first(dicom_ct):
    """IOP (1,0,0,0,1,0) is already LPS: pixel arrays are not flipped; the highest z is the last slice."""
    headers = [pydicom.dcmread(path) for path in sorted(DICOM_DIR.iterdir())[:2]]
    top = max(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    expected = top.pixel_array.astype(np.int32) * int(top.RescaleSlope) + int(top.RescaleIntercept)
    np.testing.assert_array_equal(dicom_ct.data[-1], expected)
    display_affine = dicom_ct.meta["display_affine"]
    assert display_affine[0, 2] < 0 and display_affine[1, 1] < 0 and display_affine[2, 0] > 0


def test_dicom_lines_up_with_its_label_map(dicom_ct, dicom_labels):
    assert dicom_labels.shape == dicom_ct.data.shape

    def organ_scores(image: np.ndarray) -> tuple[float, float]:
        liver, aorta = image[dicom_labels == LIVER], image[dicom_labels == AORTA]
        return _fraction_in(liver, 0, 200), _fraction_in(aorta, 100, 400)

    liver_ok, aorta_ok = organ_scores(dicom_ct.data)
    assert 0 < dicom_ct.data[dicom_labels == LIVER].mean() < 150
    assert dicom_ct.data[dicom_labels == AORTA].mean() > 100
    assert liver_ok > 0.95 and aorta_ok > 0.7
    for flipped in (dicom_ct.data[:, ::-1, :], dicom_ct.data[:, :, ::-1]):
        liver_bad, aorta_bad = organ_scores(flipped)
        assert liver_bad < liver_ok - 0.2 and aorta_bad < aorta_ok - 0.2


def test_dicom_equals_its_nifti_export(dicom_ct):
    exported = read_volume(CT_DIR / "example_ct_dicom_as_nifti.nii.gz")
    assert exported.data.shape == dicom_ct.data.shape
    assert np.abs(exported.data.astype(np.float64) - dicom_ct.data).max() <= 1
    np.testing.assert_allclose(exported.meta["display_affine"], dicom_ct.meta["display_affine"], atol=1e-3)


def test_dicom_mask_written_as_nifti_reads_back(dicom_ct, dicom_labels, tmp_path):
    out = write_mask(tmp_path / "seg.nii.gz", dicom_labels, like=dicom_ct)[0]
    np.testing.assert_allclose(nib.load(out).affine, dicom_ct.affine, atol=1e-4)
    np.testing.assert_array_equal(read_labels(out, like=dicom_ct), dicom_labels)


def test_dicom_file_without_extension_is_detected():
    first = sorted(DICOM_DIR.iterdir())[0]
    assert detect_format(first) == "dicom"
    assert read_volume(first).data.shape == (1, 512, 512)


def test_folder_with_two_series_names_them(tmp_path):
    files = sorted(DICOM_DIR.iterdir())[:3]
    for path in files:
        shutil.copy(path, tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    changed = tmp_path / files[0].name
    ds = pydicom.dcmread(changed)
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1"
    ds.save_as(changed)

    with pytest.raises(ReadError, match=r"2 DICOM series.*1\.2\.826\.0\.1\.3680043\.99\.1.*series_uid"):
        read_volume(tmp_path)
    assert sorted(len(files) for files in list_dicom_series(tmp_path).values()) == [1, 2]
    assert read_dicom_series(tmp_path, series_uid="").n_slices == 2
    with pytest.raises(ReadError, match="no series"):
        read_dicom_series(tmp_path, series_uid="9.9.9")


def test_folder_without_dicom_is_a_read_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ReadError, match="no DICOM"):
        read_volume(tmp_path)


def _write_multiframe(path: Path, frames: np.ndarray, z_positions: list[float] | None = None) -> None:
    """A minimal uncompressed multi-frame DICOM; enhanced per-frame positions when given."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = file_meta.MediaStorageSOPClassUID, file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "US"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = frames.astype("<u2").tobytes()
    if z_positions is not None:
        orientation, measures, shared = Dataset(), Dataset(), Dataset()
        orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 2
        shared.PlaneOrientationSequence = Sequence([orientation])
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for z in z_positions:
            position, group = Dataset(), Dataset()
            position.ImagePositionPatient = [0, 0, z]
            group.PlanePositionSequence = Sequence([position])
            per_frame.append(group)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x spelling
        ds.save_as(path, write_like_original=False)


def test_multiframe_cine_reads_as_a_stack_in_frame_order(tmp_path):
    frames = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    _write_multiframe(tmp_path / "cine.dcm", frames)
    volume = read_volume(tmp_path / "cine.dcm")
    np.testing.assert_array_equal(volume.data, frames)
    assert volume.affine is None and volume.format == "dicom"


def test_enhanced_multiframe_is_sorted_along_the_normal(tmp_path):
    frames = np.stack([np.full((4, 5), value) for value in (40, 0, 20)])
    _write_multiframe(tmp_path / "enhanced.dcm", frames, z_positions=[4.0, 0.0, 2.0])
    volume = read_volume(tmp_path / "enhanced.dcm")
    assert [int(volume.data[k, 0, 0]) for k in range(3)] == [0, 20, 40]  # inferior first
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.5))
