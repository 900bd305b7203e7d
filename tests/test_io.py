"""Tests of napari_fewshot.io against the real data in ../shared/data and synthetic files."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_fewshot.errors import FewShotError, ReadError, WriteError
from napari_fewshot.io import (
    Volume,
    detect_format,
    list_dicom_series,
    list_images,
    read_busi_mask,
    read_dicom_series,
    read_labels,
    read_volume,
    write_image,
    write_mask,
)
from napari_fewshot.io.writers import check_mask_target, mask_targets

from shared_data import DATA, require  # noqa: E402


@pytest.fixture
def real_data():
    """Skips without ../shared/data on a developer's machine; fails under CI=true (see shared_data)."""
    return require(DATA)


needs_data = pytest.mark.usefixtures("real_data")

CHAOS_IMAGE = DATA / "chaos_t2" / "image_1.nii.gz"
CHAOS_LABEL = DATA / "chaos_t2" / "label_1.nii.gz"
CT_DIR = DATA / "ct_totalseg"
DICOM_DIR = CT_DIR / "example_ct_dicom"
BUSI = DATA / "busi"
LIVER, AORTA = 5, 52


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chaos() -> Volume:
    return read_volume(require(CHAOS_IMAGE))


@pytest.fixture(scope="module")
def dicom_ct() -> Volume:
    return read_volume(require(DICOM_DIR))


@pytest.fixture(scope="module")
def dicom_labels(dicom_ct) -> np.ndarray:
    return read_labels(CT_DIR / "example_seg_dicom.nii.gz", like=dicom_ct)


def _fraction_in(values: np.ndarray, low: float, high: float) -> float:
    return float(np.mean((values > low) & (values < high)))


# ---------------------------------------------------------------- Volume


def test_volume_properties_and_validation():
    grey = Volume(np.zeros((4, 5, 6), np.uint8))
    rgb = Volume(np.zeros((1, 5, 6, 3), np.uint8), format="png")
    assert (grey.n_slices, grey.is_rgb, rgb.n_slices, rgb.is_rgb) == (4, False, 1, True)
    assert grey.spacing == (1.0, 1.0, 1.0) and grey.affine is None
    with pytest.raises(ValueError):
        Volume(np.zeros((5, 6)))
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 5, 6, 4)))
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 5, 6)), format="bmp")


def test_io_imports_no_napari_qt_or_torch():
    code = (
        "import sys, napari_fewshot.io; "
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- NIfTI


@needs_data
def test_chaos_reads_as_slices_first(chaos):
    header = nib.load(CHAOS_IMAGE)
    n_z = header.shape[2]
    assert chaos.data.shape == (n_z, 256, 256)
    assert chaos.spacing == pytest.approx((7.7, 1.25, 1.25), rel=1e-5)
    assert chaos.format == "nifti" and chaos.source == str(CHAOS_IMAGE)
    np.testing.assert_array_equal(chaos.affine, header.affine)


@needs_data
def test_chaos_display_grid_is_radiological(chaos):
    """Columns run toward the patient's left, rows toward posterior, slices toward superior."""
    display_affine = chaos.meta["display_affine"]
    slice_axis, row_axis, col_axis = display_affine[:3, 0], display_affine[:3, 1], display_affine[:3, 2]
    assert col_axis[0] < 0 and row_axis[1] < 0 and slice_axis[2] > 0  # RAS world: -x = left, -y = posterior
    # the file is stored L,A,S: display rows are the file's y axis reversed
    raw = np.asanyarray(nib.load(CHAOS_IMAGE).dataobj)
    np.testing.assert_array_equal(chaos.data, raw[:, ::-1, :].transpose(2, 1, 0))


@needs_data
def test_chaos_label_written_back_keeps_affine_and_voxel_order(chaos, tmp_path):
    labels = read_labels(CHAOS_LABEL, like=chaos)
    assert labels.shape == chaos.data.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and labels.max() == 4

    written = write_mask(tmp_path / "label.nii.gz", labels, like=chaos)
    assert written == [tmp_path / "label.nii.gz"]
    original, copy = nib.load(CHAOS_LABEL), nib.load(written[0])
    assert copy.shape == original.shape
    np.testing.assert_array_equal(copy.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), np.asanyarray(original.dataobj).astype(np.uint8))
    assert int(copy.header["qform_code"]) == int(original.header["qform_code"])
    assert int(copy.header["sform_code"]) == int(original.header["sform_code"])
    np.testing.assert_array_equal(read_labels(written[0], like=chaos), labels)


@needs_data
def test_totalseg_ct_and_labels_line_up():
    ct = read_volume(CT_DIR / "example_ct.nii.gz")
    labels = read_labels(CT_DIR / "example_seg_fast_force_split.nii.gz", like=ct)
    assert ct.data.shape == (112, 101, 122)  # file is (x, y, z) = (122, 101, 112), RAS
    assert ct.spacing == pytest.approx((3.0, 3.0, 3.0))
    liver_hu = ct.data[labels == LIVER]
    assert liver_hu.size > 0 and 0 < liver_hu.mean() < 150


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LAS", "PIR", "SLA", "IRP"])
def test_any_voxel_order_reads_onto_the_same_display_grid(tmp_path, axcodes):
    rng = np.random.default_rng(0)
    ras_array = rng.integers(0, 9, size=(5, 6, 7)).astype(np.uint8)  # axes x(R), y(A), z(S)
    ras_affine = np.diag([2.0, 3.0, 4.0, 1.0])
    ras_affine[:3, 3] = (10, -20, 30)
    expected = ras_array[::-1, ::-1, :].transpose(2, 1, 0)  # x -> L, y -> P, then (z, y, x)

    xform = ornt_transform(axcodes2ornt(tuple("RAS")), axcodes2ornt(tuple(axcodes)))
    file_array = apply_orientation(ras_array, xform)
    file_affine = ras_affine @ inv_ornt_aff(xform, ras_array.shape)
    path = tmp_path / f"{axcodes}.nii.gz"
    nib.Nifti1Image(file_array, file_affine).to_filename(path)

    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, expected)
    assert volume.spacing == pytest.approx((4.0, 3.0, 2.0))
    np.testing.assert_allclose(volume.meta["display_affine"] @ [0, 0, 0, 1], ras_affine @ [4, 5, 0, 1])

    out = write_mask(tmp_path / f"{axcodes}_out.nii", volume.data, like=volume)[0]
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), file_array)
    np.testing.assert_allclose(nib.load(out).affine, file_affine)


def test_nifti_4d_single_volume_is_squeezed_and_multi_volume_rejected(tmp_path):
    single = tmp_path / "single.nii.gz"
    nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)).to_filename(single)
    assert read_volume(single).data.shape == (6, 5, 4)
    series = tmp_path / "series.nii.gz"
    nib.Nifti1Image(np.ones((4, 5, 6, 2), np.float32), np.eye(4)).to_filename(series)
    with pytest.raises(ReadError, match="series.nii.gz"):
        read_volume(series)


def test_nifti_with_degenerate_affine_is_a_read_error(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((3, 4, 5))
    header["qform_code"], header["sform_code"] = 0, 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    path = tmp_path / "flat_axis.nii"
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), None, header=header), path)
    with pytest.raises(ReadError, match="flat_axis.nii.*zero length"):
        read_volume(path)


def test_nifti_2d_image_reads_as_one_slice(tmp_path):
    path = tmp_path / "flat.nii"
    nib.Nifti1Image(np.arange(12, dtype=np.int16).reshape(3, 4), np.eye(4)).to_filename(path)
    assert read_volume(path).data.shape == (1, 4, 3)


# ---------------------------------------------------------------- DICOM


@needs_data
def test_dicom_series_reads_in_hounsfield_units(dicom_ct):
    assert dicom_ct.format == "dicom" and dicom_ct.data.shape == (20, 512, 512)
    assert dicom_ct.data.dtype == np.int16 and dicom_ct.data.min() == -1024
    assert dicom_ct.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert dicom_ct.affine.shape == (4, 4)


@needs_data
def test_axial_dicom_slices_are_shown_as_stored_inferior_first(dicom_ct):
    """IOP (1,0,0,0,1,0) is already LPS: pixel arrays are not flipped; the highest z is the last slice."""
    headers = [pydicom.dcmread(path) for path in sorted(DICOM_DIR.iterdir())[:2]]
    top = max(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    expected = top.pixel_array.astype(np.int32) * int(top.RescaleSlope) + int(top.RescaleIntercept)
    np.testing.assert_array_equal(dicom_ct.data[-1], expected)
    display_affine = dicom_ct.meta["display_affine"]
    assert display_affine[0, 2] < 0 and display_affine[1, 1] < 0 and display_affine[2, 0] > 0


@needs_data
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


@needs_data
def test_dicom_equals_its_nifti_export(dicom_ct):
    exported = read_volume(CT_DIR / "example_ct_dicom_as_nifti.nii.gz")
    assert exported.data.shape == dicom_ct.data.shape
    assert np.abs(exported.data.astype(np.float64) - dicom_ct.data).max() <= 1
    np.testing.assert_allclose(exported.meta["display_affine"], dicom_ct.meta["display_affine"], atol=1e-3)


@needs_data
def test_dicom_mask_written_as_nifti_reads_back(dicom_ct, dicom_labels, tmp_path):
    out = write_mask(tmp_path / "seg.nii.gz", dicom_labels, like=dicom_ct)[0]
    np.testing.assert_allclose(nib.load(out).affine, dicom_ct.affine, atol=1e-4)
    np.testing.assert_array_equal(read_labels(out, like=dicom_ct), dicom_labels)


@needs_data
def test_dicom_file_without_extension_is_detected():
    first = sorted(DICOM_DIR.iterdir())[0]
    assert detect_format(first) == "dicom"
    assert read_volume(first).data.shape == (1, 512, 512)


@needs_data
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


# ---------------------------------------------------------------- bad inputs


def _tiff_file(tmp_path: Path) -> Path:
    path = tmp_path / "source.tif"
    tifffile.imwrite(path, np.arange(5 * 64 * 64, dtype=np.uint16).reshape(5, 64, 64))
    return path


@needs_data
@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")  # pydicom on the cut DICOM
@pytest.mark.parametrize("kind", ["nifti", "dicom", "png", "tiff", "npy"])
@pytest.mark.parametrize("keep", [100, "half"])
def test_truncated_files_are_read_errors(tmp_path, kind, keep):
    sources = {
        "nifti": lambda: CHAOS_LABEL,
        "dicom": lambda: sorted(DICOM_DIR.iterdir())[0],
        "png": lambda: BUSI / "benign" / "benign (4).png",
        "tiff": lambda: _tiff_file(tmp_path),
        "npy": lambda: (np.save(tmp_path / "source.npy", np.ones((5, 64, 64))), tmp_path / "source.npy")[1],
    }
    source = sources[kind]()
    content = source.read_bytes()
    size = 100 if keep == 100 else len(content) // 2
    broken = tmp_path / ("broken" + "".join(source.suffixes[-2:]) if kind != "dicom" else "broken.dcm")
    broken.write_bytes(content[:size])
    with pytest.raises(ReadError, match="broken"):
        read_volume(broken)


def test_missing_path_and_unknown_format_are_read_errors(tmp_path):
    with pytest.raises(ReadError, match="nothing_here.nii.gz"):
        read_volume(tmp_path / "nothing_here.nii.gz")
    notes = tmp_path / "notes.txt"
    notes.write_text("just text, long enough " * 30)
    with pytest.raises(ReadError, match="notes.txt.*supported"):
        read_volume(notes)
    assert issubclass(ReadError, FewShotError)


@pytest.mark.parametrize(
    "array",
    [np.zeros((0, 4, 4)), np.zeros((2, 3, 4, 5, 6)), np.zeros(7), np.array(3.0), np.zeros((2, 4, 4), complex)],
    ids=["empty", "5d", "1d", "0d", "complex"],
)
def test_uninterpretable_arrays_are_read_errors(tmp_path, array):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(ReadError, match="a.npy"):
        read_volume(tmp_path / "a.npy")


def test_nan_and_inf_are_read_not_rejected(tmp_path):
    data = np.array([[[np.nan, np.inf], [-np.inf, 1.0]]], np.float32)
    np.save(tmp_path / "nan.npy", data)
    tifffile.imwrite(tmp_path / "nan.tif", data)
    for name in ("nan.npy", "nan.tif"):
        np.testing.assert_array_equal(read_volume(tmp_path / name).data, data)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReadError, match="obj.npy"):
        read_volume(tmp_path / "obj.npy")


# ---------------------------------------------------------------- labels


def test_read_labels_casts_whole_floats_and_rejects_fractions(tmp_path):
    np.save(tmp_path / "whole.npy", np.array([[0.0, 1.0], [2.0, 300.0]]))
    labels = read_labels(tmp_path / "whole.npy")
    assert labels.dtype == np.uint16 and labels.shape == (1, 2, 2) and labels[0, 1, 1] == 300
    np.save(tmp_path / "frac.npy", np.array([[0.0, 0.5], [1.0, 1.0]]))
    with pytest.raises(ReadError, match="non-integer"):
        read_labels(tmp_path / "frac.npy")
    np.save(tmp_path / "neg.npy", np.array([[-1, 2]], np.int64))
    assert read_labels(tmp_path / "neg.npy").dtype == np.int32


def test_read_labels_shape_mismatch_names_both_shapes(tmp_path):
    np.save(tmp_path / "lab.npy", np.zeros((2, 4, 5), np.uint8))
    like = Volume(np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ReadError, match=r"\(2, 4, 5\).*\(3, 4, 5\)"):
        read_labels(tmp_path / "lab.npy", like=like)


# ---------------------------------------------------------------- writers


def _mask(shape=(3, 6, 7), high=4, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high + 1, size=shape)


@pytest.mark.parametrize("name", ["m.tif", "m.tiff", "m.npy", "m.nii", "m.nii.gz"])
def test_mask_round_trips(tmp_path, name):
    mask = _mask()
    like = Volume(np.zeros(mask.shape, np.float32), spacing=(2.5, 0.5, 0.75))
    written = write_mask(tmp_path / name, mask, like=like)
    assert written == [tmp_path / name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp files left behind
    back = read_labels(written[0], like=like)
    np.testing.assert_array_equal(back, mask)
    assert back.dtype == np.uint8
    if not name.endswith(".npy"):
        assert read_volume(written[0]).spacing == pytest.approx(like.spacing, rel=1e-5)


def test_tiff_mask_is_one_multipage_stack_uint16_when_needed(tmp_path):
    mask = _mask(high=1000)
    write_mask(tmp_path / "big.tif", mask)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert len(tif.pages) == 3 and tif.pages[0].dtype == np.uint16
    np.testing.assert_array_equal(read_labels(tmp_path / "big.tif"), mask)


def test_png_single_slice_writes_that_file(tmp_path):
    mask = _mask(shape=(1, 6, 7))
    assert write_mask(tmp_path / "one.png", mask) == [tmp_path / "one.png"]
    np.testing.assert_array_equal(read_labels(tmp_path / "one.png"), mask)


def test_png_stack_writes_one_numbered_file_per_slice_in_its_own_folder(tmp_path):
    mask = _mask(shape=(3, 6, 7), high=700)
    written = write_mask(tmp_path / "seg.png", mask)
    assert written == [tmp_path / "seg" / f"seg_{i:04d}.png" for i in range(3)]
    assert written == mask_targets(tmp_path / "seg.png", 3)
    assert not (tmp_path / "seg.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no staging folder left behind
    for index, path in enumerate(written):
        assert Image.open(path).mode.startswith("I")  # 16-bit PNG for labels > 255
        np.testing.assert_array_equal(read_labels(path)[0], mask[index])


def test_existing_target_needs_overwrite(tmp_path):
    target = tmp_path / "m.tif"
    write_mask(target, _mask(seed=1))
    with pytest.raises(WriteError, match="exists.*overwrite=True"):
        write_mask(target, _mask(seed=2))
    np.testing.assert_array_equal(read_labels(target), _mask(seed=1))
    write_mask(target, _mask(seed=2), overwrite=True)
    np.testing.assert_array_equal(read_labels(target), _mask(seed=2))


def test_existing_png_stack_is_never_replaced_without_overwrite(tmp_path):
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "seg_0001.png").write_bytes(b"keep me")
    with pytest.raises(WriteError, match="seg"):
        check_mask_target(tmp_path / "seg.png", 3)
    with pytest.raises(WriteError, match="seg"):
        write_mask(tmp_path / "seg.png", _mask())
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["seg_0001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]
    written = write_mask(tmp_path / "seg.png", _mask(), overwrite=True)  # replaced as a whole set
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [p.name for p in written]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


def test_png_stack_killed_mid_write_leaves_no_partial_stack(tmp_path, monkeypatch):
    """A crash after some slices (simulated: the third PNG fails) leaves nothing under the stack's name."""
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(WriteError, match="No space left"):
        write_mask(tmp_path / "seg.png", _mask(shape=(5, 6, 7)))
    assert list(tmp_path.iterdir()) == []  # no seg/, no seg_0000.png, no staging folder


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_masks_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for name in ("m.nii.gz", "m.tif", "m.npy", "one.png"):
            [path] = write_mask(tmp_path / name, _mask(shape=(1, 6, 7)))
            assert stat.S_IMODE(path.stat().st_mode) == mode, name
        stack = write_mask(tmp_path / "set.png", _mask(shape=(2, 6, 7)))
        assert {stat.S_IMODE(p.stat().st_mode) for p in stack} == {mode}
        assert stat.S_IMODE(stack[0].parent.stat().st_mode) == 0o777 & ~umask
    finally:
        os.umask(old)


def test_never_overwrite_is_an_exclusive_create(tmp_path, monkeypatch):
    """Two writers to one name: the one that loses the race (the file appears after the check) fails and
    the first writer's file stays; before, the second silently replaced it."""
    import napari_fewshot.io.writers as writers

    target = tmp_path / "m.npy"
    check = writers._check_targets

    def check_then_lose_the_race(targets, overwrite):
        check(targets, overwrite)
        np.save(target, np.full((2, 3, 4), 7, np.uint8))  # the other writer, between check and write

    monkeypatch.setattr(writers, "_check_targets", check_then_lose_the_race)
    with pytest.raises(WriteError, match="exists"):
        write_mask(target, _mask())
    assert (np.load(target) == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npy"]  # no temporary file left


def test_mask_targets_are_checked_before_any_compute(tmp_path):
    check_mask_target(tmp_path / "new" / "m.nii.gz")  # fine: a missing folder will be created
    assert not (tmp_path / "new").exists()  # ... but not by the check
    with pytest.raises(WriteError, match="extensions"):
        check_mask_target(tmp_path / "m.jpg")
    (tmp_path / "m.nii.gz").mkdir()
    with pytest.raises(WriteError, match="folder of that name"):
        check_mask_target(tmp_path / "m.nii.gz", overwrite=True)
    (tmp_path / "m.tif").write_bytes(b"x")
    with pytest.raises(WriteError, match="exists"):
        check_mask_target(tmp_path / "m.tif")
    check_mask_target(tmp_path / "m.tif", overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match="is a file"):
        check_mask_target(tmp_path / "afile" / "sub" / "m.tif")


def test_unwritable_folder_is_a_write_error(tmp_path):
    blocker = tmp_path / "afile.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(WriteError, match="afile.txt"):
        write_mask(blocker / "x.tif", _mask())
    with pytest.raises(WriteError):
        write_image(blocker / "sub" / "x.npy", np.zeros((2, 3, 4)))


def test_missing_folders_are_created(tmp_path):
    target = tmp_path / "new" / "deeper" / "m.npy"
    assert write_mask(target, _mask()) == [target] and target.is_file()


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.full((2, 3, 4), -1), "negative"),
        (np.full((2, 3, 4), 0.5), "non-integer"),
        (np.zeros((2, 2, 3, 4)), "shape"),
        (np.zeros((0, 3, 4)), "shape"),
    ],
)
def test_invalid_masks_are_write_errors(tmp_path, mask, message):
    with pytest.raises(WriteError, match=message):
        write_mask(tmp_path / "m.npy", mask)


def test_mask_must_match_like_and_extension_must_be_known(tmp_path):
    like = Volume(np.zeros((2, 3, 4)))
    with pytest.raises(WriteError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        write_mask(tmp_path / "m.npy", np.zeros((2, 3, 5), np.uint8), like=like)
    with pytest.raises(WriteError, match="extensions"):
        write_mask(tmp_path / "m.jpg", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(WriteError, match="extensions"):
        write_image(tmp_path / "h.png", np.zeros((2, 3, 4)))


def test_bool_and_2d_masks_are_accepted(tmp_path):
    mask = np.eye(4, dtype=bool)
    write_mask(tmp_path / "b.npy", mask)
    np.testing.assert_array_equal(read_labels(tmp_path / "b.npy"), mask[np.newaxis].astype(np.uint8))


@pytest.mark.parametrize("name", ["h.tif", "h.npy", "h.nii.gz"])
def test_float_image_round_trips_as_float32(tmp_path, name):
    heat = np.random.default_rng(3).random((2, 5, 6))
    heat[0, 0, 0] = np.nan
    write_image(tmp_path / name, heat, like=Volume(np.zeros((2, 5, 6)), spacing=(3.0, 1.5, 1.5)))
    back = read_volume(tmp_path / name)
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, heat.astype(np.float32))


@needs_data
def test_float_image_written_on_nifti_grid(chaos, tmp_path):
    heat = np.linspace(0, 1, chaos.data.size, dtype=np.float32).reshape(chaos.data.shape)
    out = write_image(tmp_path / "heat.nii.gz", heat, like=chaos)[0]
    image = nib.load(out)
    assert image.shape == nib.load(CHAOS_IMAGE).shape and image.get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_volume(out).data, heat)


# ---------------------------------------------------------------- TIFF / PNG / NPY readers


def test_tiff_layouts(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.arange(20, dtype=np.uint8).reshape(4, 5))
    assert read_volume(tmp_path / "flat.tif").data.shape == (1, 4, 5)

    colour = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb.tif").data, colour[np.newaxis])

    grey = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 4, axis=-1)
    tifffile.imwrite(tmp_path / "rgba.tif", grey, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_volume(tmp_path / "rgba.tif").data, grey[np.newaxis, ..., 0])

    tifffile.imwrite(tmp_path / "hyper.tif", np.zeros((2, 3, 4, 5), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(ReadError, match="hyper.tif"):
        read_volume(tmp_path / "hyper.tif")


def test_tiff_imagej_spacing_in_microns_becomes_mm(tmp_path):
    tifffile.imwrite(
        tmp_path / "um.tif",
        np.zeros((3, 4, 5), np.uint16),
        imagej=True,
        resolution=(1 / 500, 1 / 250),  # pixels per micron
        metadata={"spacing": 2000, "unit": "micron", "axes": "ZYX"},
    )
    assert read_volume(tmp_path / "um.tif").spacing == pytest.approx((2.0, 0.25, 0.5))


def test_png_modes(tmp_path):
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "rgba.png").data, grey[np.newaxis])

    colour = np.dstack([grey, grey[::-1], grey])
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    volume = read_volume(tmp_path / "colour.png")
    assert volume.is_rgb and volume.data.shape == (1, 5, 6, 3)

    Image.fromarray(grey > 10).convert("1").save(tmp_path / "bits.png")
    bits = read_volume(tmp_path / "bits.png").data
    assert bits.dtype == np.uint8 and set(np.unique(bits)) == {0, 1}

    deep = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "deep.png").data, deep[np.newaxis])

    Image.fromarray(grey).save(tmp_path / "photo.jpg", quality=95)
    assert read_volume(tmp_path / "photo.jpg").format == "jpg"


def test_npy_layouts(tmp_path):
    np.save(tmp_path / "plane.npy", np.zeros((4, 5)))
    assert read_volume(tmp_path / "plane.npy").data.shape == (1, 4, 5)
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).random((1, 8, 9, 3)))
    assert read_volume(tmp_path / "rgb.npy").data.shape == (1, 8, 9, 3)
    np.save(tmp_path / "thin.npy", np.zeros((8, 9, 3)))  # 3D is always (S, H, W), never one RGB image
    assert read_volume(tmp_path / "thin.npy").data.shape == (8, 9, 3)
    np.save(tmp_path / "stack.npy", np.zeros((3, 8, 9), bool))
    volume = read_volume(tmp_path / "stack.npy")
    assert volume.data.shape == (3, 8, 9) and volume.data.dtype == np.uint8


# ---------------------------------------------------------------- BUSI and folders


@needs_data
def test_busi_image_reads_as_grey():
    volume = read_volume(BUSI / "benign" / "benign (4).png")
    width, height = Image.open(BUSI / "benign" / "benign (4).png").size
    assert volume.data.shape == (1, height, width) and volume.data.dtype == np.uint8
    assert volume.format == "png" and volume.affine is None


@needs_data
def test_busi_masks_are_or_merged():
    image = BUSI / "benign" / "benign (4).png"
    first = np.asarray(Image.open(BUSI / "benign" / "benign (4)_mask.png").convert("L")) > 0
    second = np.asarray(Image.open(BUSI / "benign" / "benign (4)_mask_1.png").convert("L")) > 0
    merged = read_busi_mask(image)
    assert merged.dtype == bool and merged.shape == first.shape
    assert first.any() and second.any() and (second & ~first).any()
    np.testing.assert_array_equal(merged, first | second)


@needs_data
def test_busi_image_without_mask_is_a_read_error(tmp_path):
    shutil.copy(BUSI / "benign" / "benign (4).png", tmp_path / "lonely.png")
    with pytest.raises(ReadError, match="lonely.png"):
        read_busi_mask(tmp_path / "lonely.png")


@needs_data
def test_list_images_on_busi_is_natural_and_skips_masks():
    names = [p.name for p in list_images(BUSI / "benign")]
    assert len(names) == 60 and not any("_mask" in name for name in names)
    assert names.index("benign (2).png") < names.index("benign (10).png")
    assert names[:3] == ["benign (1).png", "benign (2).png", "benign (3).png"]


def test_list_images_filters_extensions(tmp_path):
    for name in ["b (10).PNG", "b (2).jpg", "b (2)_mask.png", "notes.txt", "c.tiff", "a (1).tif"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a (1).tif", "b (2).jpg", "b (10).PNG", "c.tiff"]
    with pytest.raises(ReadError):
        list_images(tmp_path / "missing")
