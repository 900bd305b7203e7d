"""The one registry of file formats (io/formats.py) and the one naming rule for masks and heatmaps (io/naming.py)."""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_fewshot.errors import WriteError
from napari_fewshot.io import Volume, formats, read_labels, write_image, write_mask
from napari_fewshot.io.formats import (
    FORMATS, extensions, format_for_source, format_named, format_of, qt_filter,
)
from napari_fewshot.io.naming import (
    cohort_mask_name, heatmap_name, heatmap_prefix, mask_file_name, split_extension, suggested_output,
)

EXPECTED_READ = {".nii.gz": "nifti", ".nii": "nifti", ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
                 ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".npy": "npy"}


@pytest.mark.parametrize("extension, name", EXPECTED_READ.items())
def test_each_extension_names_its_format_whatever_its_case(extension, name):
    assert format_of(f"dir.v2/scan{extension}", "read").name == name
    assert format_of(f"SCAN{extension.upper()}", "read").name == name
    holds_mask = name in ("nifti", "tiff", "png", "npy")
    assert (format_of(f"m{extension}", "mask") is not None) == (holds_mask or extension == ".dcm")  # .dcm: a SEG
    assert (format_of(f"h{extension}", "heatmap") is not None) == (holds_mask and name != "png")


def test_unknown_extensions_name_no_format():
    for name in ("scan.xyz", "scan", "scan.nii.gz.bak", "scan.gz", ".npy.txt"):
        assert format_of(name, "read") is None and format_of(name, "mask") is None
    assert format_of("x.jpg", "mask") is None and format_of("x.png", "heatmap") is None


def test_the_extension_lists_and_dialog_filters_come_from_the_registry():
    assert extensions("mask") == [".nii.gz", ".nii", ".tif", ".tiff", ".png", ".npy"]
    assert extensions("heatmap") == [".nii.gz", ".nii", ".tif", ".tiff", ".npy"]
    assert sorted(extensions("read")) == sorted(EXPECTED_READ)
    assert qt_filter("mask") == ("NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;PNG, one file per slice (*.png);;"
                                 "NumPy (*.npy)")
    assert qt_filter("heatmap") == "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;NumPy (*.npy)"
    assert formats.extensions_help("mask") == ".nii.gz .dcm (DICOM scans only) .tif .png .npy"
    assert all(f.extensions and all(e == e.lower() and e.startswith(".") for e in f.extensions) for f in FORMATS)
    assert len({f.name for f in FORMATS}) == len(FORMATS)
    with pytest.raises(ValueError, match="unknown file format"):
        format_named("bmp")


@pytest.mark.parametrize("source, mask, heatmap", [
    ("nifti", ".nii.gz", ".nii.gz"), ("dicom", ".nii.gz", ".nii.gz"), ("tiff", ".tif", ".tif"),
    ("png", ".png", ".tif"), ("jpg", ".png", ".tif"), ("npy", ".npy", ".npy"), (None, ".tif", ".tif")])
def test_an_output_gets_the_format_of_its_source_where_that_format_holds_it(source, mask, heatmap):
    assert format_for_source(source, "mask").extension == mask
    assert format_for_source(source, "heatmap").extension == heatmap


def _mask(n_slices: int) -> np.ndarray:
    rng = np.random.default_rng(n_slices)
    return rng.integers(0, 5, size=(n_slices, 6, 7)).astype(np.uint8)


@pytest.mark.parametrize("extension", extensions("mask"))
@pytest.mark.parametrize("n_slices", [1, 3])
def test_every_mask_format_round_trips_through_its_registered_reader(tmp_path, extension, n_slices):
    mask = _mask(n_slices)
    fmt = format_of(f"m{extension}", "mask")
    written = write_mask(tmp_path / f"m{extension}", mask)
    if fmt.slices_per_file and n_slices > 1:
        assert [p.parent.name for p in written] == ["m"] * n_slices  # a volume becomes a folder of slices
        back = np.concatenate([fmt.read(p).data for p in written])
    else:
        assert written == [tmp_path / f"m{extension}"]
        back = fmt.read(written[0]).data
        np.testing.assert_array_equal(read_labels(written[0]), mask)
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize("extension", extensions("heatmap"))
def test_every_heatmap_format_round_trips_float32(tmp_path, extension):
    data = np.linspace(-1, 1, 2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    [path] = write_image(tmp_path / f"h{extension}", data)
    back = format_of(path, "heatmap").read(path).data
    np.testing.assert_array_equal(back, data)


def test_a_format_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(WriteError, match=r"use one of the extensions .nii.gz, .nii, .tif, .tiff, .npy\."):
        write_image(tmp_path / "h.png", np.zeros((1, 3, 3), np.float32))
    with pytest.raises(WriteError, match="65535"):
        write_mask(tmp_path / "big.png", np.full((1, 3, 3), 70000, np.uint32))
    assert not list(tmp_path.iterdir())


def test_a_format_needing_a_dicom_source_is_one_registry_entry(tmp_path):
    """DICOM SEG is one FileFormat with needs_dicom_source (io/dicom_seg.py writes it; test_dicom_seg.py reads
    it back). It sits beside the DICOM image format on .dcm, is offered only for DICOM scans, and is refused
    for others in one sentence offering NIfTI; reading .dcm still goes to the DICOM reader (a SEG by its SOP
    class)."""
    seg = format_named("dicom_seg")
    assert seg.needs_dicom_source and seg.keeps_classes and seg.read is None
    assert format_of("seg.dcm", "mask") is seg and format_of("seg.dcm", "read").name == "dicom"
    assert ".dcm" not in extensions("mask") and ".dcm" in extensions("mask", "dicom")
    assert "DICOM SEG (*.dcm)" in qt_filter("mask", "dicom") and "DICOM" not in qt_filter("mask", "nifti")
    assert formats.extensions_help("mask") == ".nii.gz .dcm (DICOM scans only) .tif .png .npy"
    mask = _mask(2)
    nifti_scan = Volume(np.zeros(mask.shape, np.int16), (1.0, 1.0, 1.0), None, "scan.nii.gz", "nifti", {})
    for scan in (None, nifti_scan, replace(nifti_scan, format="dicom")):  # the last: DICOM, but no source files
        with pytest.raises(WriteError, match=r"not read from DICOM files; save the mask as NIfTI \(\.nii\.gz\)"):
            write_mask(tmp_path / "seg.dcm", mask, like=scan)
    assert not (tmp_path / "seg.dcm").exists()


def test_the_heatmap_rule():
    assert heatmap_name(heatmap_prefix(), 1, "Liver", ".nii.gz") == "heatmap_class1_liver.nii.gz"
    assert heatmap_name(heatmap_prefix(), 2, None, ".tif") == "heatmap_class2.tif"
    assert heatmap_name(heatmap_prefix("benign (1)"), 3, "Kidney (left)", ".tif") == \
        "benign (1)_heatmap_class3_kidney_left.tif"
    assert heatmap_name("scan_heatmap", 4, "ü", ".npy") == "scan_heatmap_class4.npy"  # nothing left after slug
    # two classes whose names slug alike still get two files
    assert heatmap_name("h", 1, "Kidney-Left", ".tif") != heatmap_name("h", 2, "kidney left", ".tif")


def test_every_writer_of_heatmaps_names_them_by_the_one_rule(tmp_path):
    from napari_fewshot.io.image_sets import heatmap_targets
    from napari_fewshot.pipeline import write_heatmaps
    from napari_fewshot.plugin.writers import heatmap_paths

    names = {1: "Liver", 2: ""}
    plugin = heatmap_paths(tmp_path / "scan_heatmap.nii.gz", [1, 2], names)
    assert [p.name for p in plugin.values()] == [heatmap_name("scan_heatmap", c, names[c], ".nii.gz") for c in (1, 2)]
    sets = heatmap_targets(tmp_path, ["a.png"], names)
    assert [p.name for p in sets] == [heatmap_name(heatmap_prefix("a"), c, names[c], ".tif") for c in (1, 2)]
    similarity = {1: np.zeros((2, 3, 4), np.float32), 2: np.ones((2, 3, 4), np.float32)}
    result = SimpleNamespace(similarity=similarity, similarity_volume=lambda c: similarity[c])
    for source, extension in (("nifti", ".nii.gz"), ("npy", ".npy"), ("png", ".tif")):
        volume = Volume(np.zeros((2, 3, 4), np.int16), (1.0, 1.0, 1.0), None, f"s.{source}", source, {})
        written = write_heatmaps(tmp_path / source, result, volume, names={1: "Liver"})
        assert [p.name for p in written] == [f"heatmap_class1_liver{extension}", f"heatmap_class2{extension}"]


@pytest.mark.parametrize("scan, source, mask", [
    ("a/scan.nii.gz", "nifti", "a/scan.nii.gz"), ("scan.nii", "nifti", "scan.nii"),
    ("A/S.NII.GZ", "nifti", "A/S.nii.gz"),
    ("x.tiff", "tiff", "x.tiff"), ("x.TIF", "tiff", "x.tif"), ("x.npy", "npy", "x.npy"), ("x.png", "png", "x.png"),
    ("x.jpg", "jpg", "x.png"), ("b (1).JPEG", "jpg", "b (1).png"), ("p/series", "dicom", "p/series.nii.gz"),
    ("scan.nii", "dicom", "scan.nii.nii.gz")])
def test_a_batch_scan_gets_its_path_and_the_mask_format_of_its_source(scan, source, mask):
    assert cohort_mask_name(scan, source) == mask


def test_the_widget_suggests_scan_mask_beside_the_scan():
    assert suggested_output("/d/ct.nii.gz", "nifti", "mask") == Path("/d/ct_mask.nii.gz")
    assert suggested_output("/d/ct.nii.gz", "nifti", "heatmap") == Path("/d/ct_heatmap.nii.gz")
    assert suggested_output("/d/series", "dicom", "mask") == Path("/d/series_mask.nii.gz")
    assert suggested_output("/d/img.ima", "dicom", "mask") == Path("/d/img_mask.nii.gz")
    assert suggested_output("/d/us.JPG", "jpg", "mask") == Path("/d/us_mask.png")
    assert suggested_output("/d/us.png", "png", "heatmap") == Path("/d/us_heatmap.tif")
    assert suggested_output("/d/a.tiff", "tiff", "mask") == Path("/d/a_mask.tif")
    assert mask_file_name("benign (1)", ".png") == "benign (1)_mask.png"
    assert split_extension("a.b.NII.GZ") == ("a.b", ".NII.GZ") and split_extension("a.v2") == ("a.v2", "")
