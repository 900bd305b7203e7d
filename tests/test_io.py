"""Tests of napari_fewshot.io: the Volume, inputs that must be read errors, label maps. Each format has
its own file: test_io_nifti.py, test_io_dicom.py, test_io_images.py (TIFF, PNG, NPY, BUSI folders) and
test_io_writers.py; the real data is ../shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_fewshot.errors import FewShotError, ReadError
from napari_fewshot.io import Volume, read_labels, read_volume

from shared_data import CHAOS  # noqa: E402

CHAOS_LABEL = CHAOS / "label_1.nii.gz"  # shipped in tests/data


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


# ---------------------------------------------------------------- bad inputs


def _tiff_file(tmp_path: Path) -> Path:
    path = tmp_path / "source.tif"
    tifffile.imwrite(path, np.arange(5 * 64 * 64, dtype=np.uint16).reshape(5, 64, 64))
    return path


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")  # pydicom on the cut DICOM
@pytest.mark.parametrize("kind", ["nifti", "dicom", "png", "tiff", "npy"])
@pytest.mark.parametrize("keep", [100, "half"])
def test_truncated_files_are_read_errors(tmp_path, kind, keep, ct_dicom, png_set):
    sources = {
        "nifti": lambda: CHAOS_LABEL,
        "dicom": lambda: sorted(ct_dicom.iterdir())[0],
        "png": lambda: png_set / "mr" / "mr (4).png",
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
