"""Inputs that used to be read wrong without a word, or never finished (issue 22):

- a DICOM series with a missing slice, or two acquisitions interleaved under one series UID, is refused with
  one sentence naming the gap / the acquisitions (never stacked at a made-up uniform spacing);
- a named pipe (FIFO) as `segment`'s input or inside a batch folder is refused / skipped, never opened;
- an image too large to segment is refused from its header, before its pixels are read.

The DICOM series are written here from the packaged CT sample (sample_data/), so no shared data is needed.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_fewshot.cli import main
from napari_fewshot.cohort import find_scans
from napari_fewshot.errors import ReadError
from napari_fewshot.io import read_volume
from napari_fewshot.io._arrays import MAX_SLICE_PIXELS, MAX_VOXELS
from napari_fewshot.sample_data import CT_IMAGE
from shared_data import CT_CLASS_UID, write_dicom_series

SPACING_MM = 7.7


@pytest.fixture(scope="module")
def ct_slices() -> np.ndarray:
    """(8, 32, 32) HU: eight axial slices of the packaged abdominal CT, cropped."""
    return np.asarray(read_volume(CT_IMAGE).data[40:48, 30:62, 40:72], dtype=np.int32)


def write_series(folder: Path, slices: np.ndarray, heights: list[float], acquisitions: list[int] | None = None) -> Path:
    return write_dicom_series(folder, slices, heights, acquisitions, thickness_mm=SPACING_MM)


def test_the_written_series_reads_back_at_its_spacing(tmp_path, ct_slices):
    volume = read_volume(write_series(tmp_path / "ct", ct_slices, [k * SPACING_MM for k in range(8)]))
    assert volume.spacing[0] == pytest.approx(SPACING_MM)
    assert volume.data.shape == (8, 32, 32)
    np.testing.assert_array_equal(np.sort(volume.data, axis=None), np.sort(ct_slices, axis=None))


def test_a_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path, ct_slices):
    folder = write_series(tmp_path / "ct", ct_slices, [k * SPACING_MM for k in range(8)])
    (folder / "IM0003").unlink()  # z = 23.1 mm
    with pytest.raises(ReadError) as err:
        read_volume(folder)
    message = str(err.value)
    assert "15.4 mm" in message and "7.7 mm" in message and "15.4 and 30.8" in message, message
    assert "\n" not in message and message.count(". ") == 0, message


def test_the_ct_series_with_one_file_removed_is_refused(tmp_path, ct_dicom):
    """The CT sample's series (3 mm apart, conftest.ct_dicom), one file in the middle removed."""
    import shutil

    files = sorted(ct_dicom.iterdir())
    for path in files[:6]:
        shutil.copy(path, tmp_path)
    (tmp_path / files[2].name).unlink()
    with pytest.raises(ReadError, match=r"3 mm apart but 6 mm apart .* so a slice is missing"):
        read_volume(tmp_path)


def test_a_missing_slice_through_the_cli_is_exit_2_before_compute(tmp_path, ct_slices, capsys):
    folder = write_series(tmp_path / "ct", ct_slices, [k * SPACING_MM for k in range(8)])
    (folder / "IM0005").unlink()
    support = tmp_path / "support.npy"
    np.save(support, np.zeros((7, 32, 32), np.uint8))
    assert main(["segment", str(folder), "--support", str(support), "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


def test_two_acquisitions_interleaved_under_one_series_uid_are_refused(tmp_path, ct_slices):
    heights = [k * SPACING_MM / 2 for k in range(8)]  # acquisition 1 at 0, 7.7 ...; acquisition 2 at 3.85, 11.55 ...
    folder = write_series(tmp_path / "ct", ct_slices, heights, acquisitions=[1 + k % 2 for k in range(8)])
    with pytest.raises(ReadError, match=r"2 acquisitions \(AcquisitionNumber 1, 2\)") as err:
        read_volume(folder)
    assert "\n" not in str(err.value)


def test_acquisitions_one_after_the_other_still_read(tmp_path, ct_slices):
    """Step-and-shoot CT numbers each table position's slices as its own acquisition: not interleaved."""
    heights = [k * SPACING_MM for k in range(8)]
    volume = read_volume(write_series(tmp_path / "ct", ct_slices, heights, acquisitions=[1 + k // 4 for k in range(8)]))
    assert volume.data.shape[0] == 8


def test_two_acquisitions_at_the_same_positions_are_refused(tmp_path, ct_slices):
    heights = [k * SPACING_MM for k in range(4)] * 2
    folder = write_series(tmp_path / "ct", ct_slices, heights, acquisitions=[1] * 4 + [2] * 4)
    with pytest.raises(ReadError, match="2 acquisitions"):
        read_volume(folder)


# -- named pipes ------------------------------------------------------------------------------------
class Unblocker:
    """Opens the FIFOs for writing (then closes them) if the test is still running after `seconds`: a reader
    blocked on one gets end-of-file instead of hanging the test run; `needed` says it had to."""

    def __init__(self, fifos: list[Path], seconds: float = 20.0):
        self.fifos, self.needed, self.done = fifos, False, threading.Event()
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds: float) -> None:
        if self.done.wait(seconds):
            return
        for fifo in self.fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only when a reader is waiting
                self.needed = True
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_as_segment_input_is_exit_2_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "scan.npy"
    os.mkfifo(fifo)
    support = tmp_path / "support.npy"
    np.save(support, np.zeros((3, 40, 40), np.uint8))
    with Unblocker([fifo]) as watch:
        code = main(["segment", str(fifo), "--support", str(support), "--out", str(tmp_path / "m.npy")])
    assert not watch.needed, "segment opened the named pipe and waited for a writer"
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "named pipe" in err and err.count("\n") == 0, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_fifos_in_a_batch_folder_are_skipped_and_reported(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    np.save(cohort / "real.npy", np.zeros((3, 40, 40), np.float32))
    fifos = [cohort / "pipe.nii.gz", cohort / "noextension"]
    for fifo in fifos:
        os.mkfifo(fifo)
    left_out: list[tuple[str, str]] = []
    with Unblocker(fifos) as watch:
        scans = find_scans(cohort, left_out=left_out)
    assert not watch.needed, "the scan search opened a named pipe and waited for a writer"
    assert [s.name for s in scans] == ["real.npy"]
    assert sorted(name for name, why in left_out if "named pipe" in why) == ["noextension", "pipe.nii.gz"]


def test_a_fifo_is_named_by_what_it_is(tmp_path):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with Unblocker([fifo]) as watch, pytest.raises(ReadError, match="named pipe"):
        read_volume(fifo)
    assert not watch.needed


# -- images too large to segment -------------------------------------------------------------------
def _sparse_npy(path: Path, shape: tuple[int, ...], dtype=np.uint8) -> Path:
    """A .npy file of `shape` whose pixels are a hole in the file (nothing written, nothing allocated)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                      "shape": shape})
        handle.truncate(handle.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


def _sparse_nifti(path: Path, shape: tuple[int, ...]) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    with open(path, "wb") as handle:
        header.write_to(handle)
        handle.write(b"\0" * 4)
        handle.truncate(352 + int(np.prod(shape)))
    return path


def _dicom_claiming(path: Path, rows: int, columns: int, frames: int = 1) -> Path:
    """A DICOM file whose header declares `frames` images of rows x columns (its pixel data is tiny)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_CLASS_UID, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_CLASS_UID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "CT"
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\0" * 64
    ds.save_as(path, enforce_file_format=True)
    return path


def _png(path: Path, side: int) -> Path:
    Image.new("L", (side, side)).save(path)
    return path


def _tiff(path: Path, shape: tuple[int, ...]) -> Path:
    tifffile.memmap(path, shape=shape, dtype=np.uint8).flush()  # the file is sparse: no pixels are written
    return path


HUGE = {  # what was read whole (up to 7 GB with the work that follows) before anything said no
    "NPY 20000 x 20000": lambda d: _sparse_npy(d / "big.npy", (20000, 20000)),
    "NPY 1200 slices of 1024 x 1024": lambda d: _sparse_npy(d / "tall.npy", (1200, 1024, 1024)),
    "PNG 12000 x 12000": lambda d: _png(d / "big.png", 12000),
    "TIFF 8000 x 8000": lambda d: _tiff(d / "big.tif", (8000, 8000)),
    "NIfTI 10000 x 10000 x 1": lambda d: _sparse_nifti(d / "big.nii", (10000, 10000, 1)),
    "DICOM file 20000 x 20000": lambda d: _dicom_claiming(d / "big.dcm", 20000, 20000),
    "DICOM 5000 frames of 512 x 512": lambda d: _dicom_claiming(d / "frames.dcm", 512, 512, 5000),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_an_image_too_large_is_refused_from_its_header(tmp_path, case, monkeypatch):
    path = HUGE[case](tmp_path)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the pixels were read"))
    monkeypatch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("the pixels were decoded"))
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("the pixels were read"))
    with pytest.raises(ReadError, match="too large") as err:
        read_volume(path)
    message = str(err.value)
    assert f"{MAX_SLICE_PIXELS:,}" in message and f"{MAX_VOXELS:,}" in message, message
    assert "\n" not in message and message.endswith("."), message


def test_a_dicom_series_too_large_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    first = _dicom_claiming(folder / "a.dcm", 12000, 12000)
    uid = pydicom.dcmread(first).SeriesInstanceUID
    for name in ("b.dcm", "c.dcm"):
        ds = pydicom.dcmread(first)
        ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), uid
        ds.save_as(folder / name)
    with pytest.raises(ReadError, match=r"3 x 12000 x 12000.*too large"):
        read_volume(folder)


def test_the_cli_refuses_a_huge_image_with_exit_2(tmp_path, capsys):
    image = _sparse_npy(tmp_path / "big.npy", (20000, 20000))
    support = tmp_path / "support.npy"
    np.save(support, np.zeros((1, 8, 8), np.uint8))
    assert main(["segment", str(image), "--support", str(support), "--out", str(tmp_path / "m.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "too large" in err and err.count("\n") == 0, err


def test_images_at_the_limit_still_read(tmp_path):
    side = 2048
    assert side * side <= MAX_SLICE_PIXELS
    np.save(tmp_path / "ok.npy", np.zeros((2, side, side), np.uint8))
    assert read_volume(tmp_path / "ok.npy").data.shape == (2, side, side)
    assert read_volume(_png(tmp_path / "ok.png", side)).data.shape == (1, side, side)


def test_an_input_name_longer_than_the_file_system_allows_is_one_sentence(tmp_path, capsys):
    name = tmp_path / ("x" * 300 + ".nii.gz")
    with pytest.raises(ReadError, match="File name too long"):
        read_volume(name)
    assert main(["segment", str(name), "--support", str(name), "--out", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected" not in err[0], err
