"""Where the tests' real data lives, and how tests get it.

Two sources:

- data the repository carries, so a fresh clone runs the tests that need real scans: the CT sample
  (``sample_data/``), two CHAOS-T2 MR cases (``tests/data/chaos_t2``, CC BY-SA 4.0, see its README) and
  TotalSegmentator's DICOM series with its label map (``tests/data/ct_dicom``, Apache-2.0);
  DICOM series and folders of 2D PNG images are written from them by fixtures (``tests/data_fixtures.py``).
- the shared evaluation data beside the repository (``../shared/data``, or ``NAPARI_FEWSHOT_TEST_DATA``):
  the BUSI ultrasound set (not redistributable), the rest of CHAOS and TotalSegmentator's full label maps.
  :data:`CHAOS` and :data:`CT_DICOM` are the shared copies when they are there (CI), else the shipped ones:
  the tests use only the shipped files (:data:`CHAOS_CASES`), so both give the same results.

In CI (CI set to anything but "", 0, false or no) missing shared data is an error, so a broken checkout never
passes by skipping; on a developer's machine or a fresh clone without it, the tests that need it are skipped
with the reason. Every test that needs the shared data goes through :func:`require` (directly, or through a
fixture calling it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("NAPARI_FEWSHOT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHIPPED = Path(__file__).resolve().parent / "data"
CHAOS_CASES = ("1", "5")  # the two cases the repository carries (tests/data/chaos_t2)
CHAOS = DATA / "chaos_t2" if (DATA / "chaos_t2").is_dir() else SHIPPED / "chaos_t2"
BUSI = DATA / "busi"
CT = DATA / "ct_totalseg"
# TotalSegmentator's real DICOM series, its label map and NIfTI export (Apache-2.0): shared copy when present, else
# the one shipped in tests/data/ct_dicom (same files, see its README)
CT_DICOM = CT if (CT / "example_ct_dicom").is_dir() else SHIPPED / "ct_dicom"
CHAOS_NAMES = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
BUSI_REASON = "needs the BUSI ultrasound set (../shared/data/busi), which may not be redistributed"


def in_ci() -> bool:
    """True under a CI service (they set CI=true); CI=false or CI=0 is a developer's machine."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(path: Path) -> Path:
    """Return `path`, or skip (fail in CI) when the shared data is not there."""
    if not path.exists():
        busi = BUSI in (path, *path.parents)
        message = BUSI_REASON if busi else f"shared test data not found at {path} (see README: tests/data)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


# -- data written from what the repository carries ------------------------------------------------------
CT_CLASS_UID = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom_slice(path: Path, pixels, z: float, number: int, series_uid: str, acquisition: int = 1,
                      pixel_mm: float = 3.0, thickness_mm: float = 3.0) -> None:
    """One axial CT slice `pixels` (H, W) in HU, stored as uint16 with intercept -1024, at height `z` mm."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_CLASS_UID, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_CLASS_UID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = series_uid, "CT"
    ds.InstanceNumber, ds.AcquisitionNumber = number, acquisition
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [pixel_mm, pixel_mm], thickness_mm
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.clip(pixels + 1024, 0, 65535).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_dicom_series(folder: Path, slices, heights, acquisitions=None, pixel_mm: float = 3.0,
                       thickness_mm: float = 3.0) -> Path:
    """`slices` (S, H, W) HU as one DICOM series in `folder` (files IM0000, IM0001 ...), slice k at heights[k] mm."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for k, (pixels, z) in enumerate(zip(slices, heights)):
        write_dicom_slice(folder / f"IM{k:04d}", pixels, z, k + 1, uid, acquisitions[k] if acquisitions else 1,
                          pixel_mm=pixel_mm, thickness_mm=thickness_mm)
    return folder


CT_DICOM_SLICES = slice(80, 100)  # 20 slices of the CT sample through liver and spleen


def write_ct_dicom(folder: Path) -> Path:
    """The CT sample's slices 80-99 (20 x 101 x 122 HU, 3 mm apart, 3 mm pixels) as a DICOM series."""
    import numpy as np

    from napari_fewshot.io import read_volume
    from napari_fewshot.sample_data import CT_IMAGE

    ct = read_volume(CT_IMAGE)
    slices = np.asarray(ct.data[CT_DICOM_SLICES], dtype=np.int32)
    return write_dicom_series(folder, slices, [3.0 * k for k in range(len(slices))])


def _grey_png(path: Path, plane, mask=None) -> None:
    """`plane` (H, W) float as an 8-bit PNG stored RGB with the grey repeated (as BUSI's images are)."""
    import numpy as np
    from PIL import Image

    lo, hi = np.percentile(plane, (0.5, 99.5))
    grey = (np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(path)


def write_png_slice_set(root: Path) -> Path:
    """A BUSI-style folder of 2D images made from the shipped scans, for workflow tests (not accuracy).

    ``root/mr/mr (N).png`` (N = 1..8): axial slices through the liver of CHAOS case 1, each cropped to its
    own size (208-256 px), with the liver as ``mr (N)_mask.png``; image 3's liver is split over
    ``mr (3)_mask.png`` and ``mr (3)_mask_1.png`` (a set's masks are OR-merged). ``root/ct/ct (N).png``
    (N = 1..4): liver slices of the CT sample with ``ct (N)_mask.png``. Returns `root`.
    """
    import numpy as np
    from PIL import Image

    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    def save(folder: Path, stem: str, plane, mask, split: bool = False) -> None:
        _grey_png(folder / f"{stem}.png", plane)
        parts = [mask]
        if split:  # the left and right halves of the organ in two mask files
            columns = np.flatnonzero(mask.any(axis=0))
            middle = (columns[0] + columns[-1]) // 2 + 1
            half = np.zeros_like(mask)
            half[:, :middle] = mask[:, :middle]
            parts = [half, mask & ~half]
        for k, part in enumerate(parts):
            suffix = "_mask" if k == 0 else f"_mask_{k}"
            Image.fromarray(part.astype(np.uint8) * 255).convert("1").save(folder / f"{stem}{suffix}.png")

    mr = read_volume(CHAOS / "image_1.nii.gz")
    mr_liver = read_labels(CHAOS / "label_1.nii.gz", like=mr) == 1
    z = np.flatnonzero(mr_liver.any(axis=(1, 2)))
    (root / "mr").mkdir(parents=True, exist_ok=True)
    for n, s in enumerate(np.linspace(z[2], z[-3], 8).round().astype(int), start=1):
        size = 256 - 8 * (n - 1) if n % 2 else 256
        top = (256 - size) // 2
        crop = np.s_[top:top + size, : 256 - 6 * (n - 1)]
        save(root / "mr", f"mr ({n})", mr.data[s][crop], mr_liver[s][crop], split=n == 3)
    ct = read_volume(CT_IMAGE)
    ct_liver = read_labels(CT_LABELS, like=ct) == 1
    (root / "ct").mkdir(exist_ok=True)
    for n, s in enumerate((80, 88, 96, 104), start=1):
        save(root / "ct", f"ct ({n})", np.clip(ct.data[s], -160, 240).astype(np.float32), ct_liver[s])
    return root
