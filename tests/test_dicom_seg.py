"""DICOM SEG out and in (io/dicom_seg.py): a mask of a DICOM series written as a SEG that refers to the series'
images, checked by reading it back with this package, highdicom and pydicom; the class-name sidecar of the
other formats (io/class_table.py).

Two series: a small one made here with pydicom from the CT sample that ships (so a fresh clone runs every
test), and the real 20-slice series of TotalSegmentator (shared_data.CT_DICOM: shipped in tests/data/ct_dicom).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from napari_fewshot.errors import WriteError
from napari_fewshot.io import read_labels, read_volume, write_mask
from napari_fewshot.io.class_table import ClassTable
from napari_fewshot.io.sidecar import read_sidecar, sidecar_path
from napari_fewshot.io.dicom_seg import SEG_SOP_CLASS_UID, coded_property
from napari_fewshot.io.formats import qt_filter
from napari_fewshot.io.orientation import to_file_grid
from napari_fewshot.io.targets import check_target
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

from dicom_series import make_series
from shared_data import CT_DICOM as REAL_CT

@pytest.fixture(scope="module")
def made_series(tmp_path_factory):
    """(series folder, its Volume as read, the sample's labels on it, the sample's organ names)."""
    return make_series(tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="module")
def real_series():
    folder = REAL_CT / "example_ct_dicom"
    volume = read_volume(folder)
    labels = read_labels(REAL_CT / "example_seg_dicom.nii.gz", like=volume)
    names = {int(k): v for k, v in json.loads((REAL_CT / "class_map_total.json").read_text()).items()}
    kept = [1, 2, 3, 5, 52]  # spleen, kidney_right, kidney_left, liver, aorta
    return folder, volume, np.where(np.isin(labels, kept), labels, 0).astype(np.uint8), {k: names[k] for k in kept}


def _instance_uid(path: Path) -> str:
    """SOPInstanceUID of a file (the real series keeps it in the file meta header only)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID)


def _check_seg(path: Path, folder: Path, volume, labels: np.ndarray, names: dict[int, str], colours: dict) -> None:
    """The SEG at `path` read back by napari-fewshot, highdicom and pydicom equals `labels` on `volume`'s grid."""
    values = sorted(names)
    back = read_volume(path)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(back.meta["display_affine"], volume.meta["display_affine"], atol=1e-4)
    assert back.spacing == pytest.approx(volume.spacing)
    assert back.meta["classes"].names == names
    for value, colour in colours.items():
        np.testing.assert_allclose(back.meta["classes"].colours[value][:3], colour[:3], atol=0.02)

    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    assert list(seg.get_segment_numbers()) == list(range(1, len(values) + 1))
    sources = {_instance_uid(p): p for p in folder.iterdir()}
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == set(sources)
    for number, value in enumerate(values, 1):
        description = seg.get_segment_description(number)
        assert description.segment_label == names[value]
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        assert description.algorithm_identification[0].AlgorithmName == "napari-fewshot"
        assert description.segmented_property_type.value == coded_property(names[value])[1][0]

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and ds.Modality == "SEG"
    assert int(ds.NumberOfFrames) == labels.shape[0] * len(values)  # every slice of every segment, empty ones too
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    source_positions = {uid: np.array(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, float)
                        for uid, p in sources.items()}
    # each frame against the labels on the file grid of the source image it names (pixel for pixel)
    grid = to_file_grid(labels, volume.meta)  # (columns, rows, slices in the order of meta["source_files"])
    slice_of = {uid: volume.meta["source_files"].index(str(p)) for uid, p in sources.items()}
    for item, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(position, source_positions[uid], atol=1e-3)
        np.testing.assert_array_equal(frame.astype(bool), grid[:, :, slice_of[uid]].T == values[number - 1])


def test_a_seg_of_the_made_series_round_trips_in_three_readers(made_series, tmp_path):
    folder, volume, labels, names = made_series
    colours = {1: (0.95, 0.15, 0.15, 1.0), 2: (0.15, 0.55, 1.0, 1.0)}
    present = {v: names[v] for v in sorted(set(np.unique(labels)) - {0})}
    assert len(present) >= 3, present  # liver, spleen and a kidney at least in these slices
    written = write_mask(tmp_path / "organs.dcm", labels, like=volume, classes=ClassTable(present, colours))
    assert written == [tmp_path / "organs.dcm"]  # the names are inside: no sidecar
    assert not sidecar_path(tmp_path / "organs.dcm").exists()
    _check_seg(written[0], folder, volume, labels, present, colours)


def test_a_seg_of_the_real_series_round_trips_in_three_readers(real_series, tmp_path):
    folder, volume, labels, names = real_series
    written = write_mask(tmp_path / "seg.dcm", labels, like=volume, classes=ClassTable(names, {5: (1, 0, 0, 1)}))
    _check_seg(written[0], folder, volume, labels, names, {5: (1, 0, 0, 1)})


def test_a_seg_beside_its_series_is_not_taken_for_a_slice(made_series, tmp_path):
    folder, volume, labels, names = made_series
    import shutil

    copy = tmp_path / "series"
    shutil.copytree(folder, copy)
    liver = (labels == 1).astype(np.uint8)
    write_mask(copy / "mask.dcm", liver, like=volume, classes=ClassTable({1: names[1]}))
    np.testing.assert_array_equal(read_volume(copy).data, volume.data)  # one series, the SEG left aside
    back = read_volume(copy / "mask.dcm")  # one segment: highdicom shares its identification among the frames
    np.testing.assert_array_equal(back.data, liver)
    assert back.meta["classes"].names == {1: "liver"}


def test_a_scan_not_from_dicom_gets_no_seg_in_one_sentence(tmp_path):
    ct = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=ct)
    with pytest.raises(WriteError, match=r"not read from DICOM files; save the mask as NIfTI \(\.nii\.gz\)") as err:
        write_mask(tmp_path / "mask.dcm", labels, like=ct)
    assert str(err.value).count(". ") == 0 and not (tmp_path / "mask.dcm").exists()
    with pytest.raises(WriteError, match="NIfTI"):  # before any compute, when the scan is known
        check_target(tmp_path / "mask.dcm", ct.n_slices, scan=ct)
    assert "DICOM SEG" not in qt_filter("mask", "nifti") and "DICOM SEG (*.dcm)" in qt_filter("mask", "dicom")


def test_unnamed_and_far_apart_values_come_back_as_written(made_series, tmp_path):
    folder, volume, labels, _ = made_series
    mask = np.zeros_like(labels)
    mask[labels == 1], mask[labels == 2] = 7, 52  # values 7 and 52, no names: segments 1 and 2
    path = write_mask(tmp_path / "m.dcm", mask, like=volume)[0]
    back = read_volume(path)
    np.testing.assert_array_equal(back.data, mask)
    assert back.meta["classes"].names == {7: "label 7", 52: "label 52"}
    assert list(hd.seg.segread(path).get_segment_numbers()) == [1, 2]


@pytest.mark.parametrize("name, expected", [("liver", "Liver"), ("kidney_right", "Right kidney"),
                                            ("Left Kidney", "Left kidney"), ("lesion", "Lesion"),
                                            ("Gallbladder", "Gallbladder"), ("aorta", "Aorta"),
                                            ("pancreas", "Pancreas"), ("my class", "Tissue"), (None, "Tissue")])
def test_class_names_get_snomed_codes(name, expected):
    assert coded_property(name)[1][1] == expected


# -- the sidecar of the other formats --------------------------------------------------------------
@pytest.mark.parametrize("extension", [".nii.gz", ".tif", ".png", ".npy"])
def test_names_and_colours_go_to_a_sidecar_and_come_back(extension, tmp_path):
    ct = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=ct)[30:32]
    table = ClassTable({1: "liver", 2: "spleen"}, {1: (255, 0, 0), 2: (0.1, 0.2, 0.9, 1.0)})
    written = write_mask(tmp_path / f"mask{extension}", labels, classes=table)
    sidecar = tmp_path / "mask.labels.json"
    assert written[-1] == sidecar and read_sidecar(written[0] if extension != ".png" else tmp_path / "mask.png") \
        == ClassTable({1: "liver", 2: "spleen"}, {1: (1.0, 0.0, 0.0, 1.0), 2: (0.1, 0.2, 0.9, 1.0)})
    assert json.loads(sidecar.read_text())["classes"][0] == {"id": 1, "name": "liver", "colour": [1.0, 0.0, 0.0, 1.0]}


def test_a_sidecar_follows_the_masks_overwrite_rule(tmp_path):
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[0, 2:4, 2:4] = 1
    table = ClassTable({1: "liver"})
    write_mask(tmp_path / "m.tif", mask, classes=table)
    with pytest.raises(WriteError, match="m.labels.json.*already exists"):  # another mask's table is kept
        write_mask(tmp_path / "m.nii.gz", mask, classes=table)
    with pytest.raises(WriteError, match="already exists"):
        check_target(tmp_path / "m.nii.gz", 2, classes=True)
    (tmp_path / "m.tif").unlink()  # a mask deleted to be made again: its table goes with the new one
    write_mask(tmp_path / "m.nii.gz", mask, classes=table)
    write_mask(tmp_path / "m.nii.gz", mask, classes=ClassTable({1: "spleen"}), overwrite=True)
    assert read_sidecar(tmp_path / "m.nii.gz").names == {1: "spleen"}
    write_mask(tmp_path / "m.nii.gz", mask, overwrite=True)  # no names now: the old table would lie
    assert not sidecar_path(tmp_path / "m.nii.gz").exists()


def test_a_users_file_at_the_sidecars_name_is_never_replaced(tmp_path):
    (tmp_path / "m.labels.json").write_text('{"my": "notes"}')
    with pytest.raises(WriteError, match="not written by napari-fewshot"):
        write_mask(tmp_path / "m.nii.gz", np.ones((1, 4, 4), np.uint8), classes=ClassTable({1: "a"}), overwrite=True)
    assert (tmp_path / "m.labels.json").read_text() == '{"my": "notes"}' and not (tmp_path / "m.nii.gz").exists()


# -- segment and batch write a SEG for a DICOM scan ------------------------------------------------
def test_segment_from_a_seg_support_writes_a_seg_with_its_names(made_series, tmp_path, capsys):
    """`segment SERIES --support earlier.dcm --out mask.dcm`: the support's segment names and colours go into
    the new SEG; `--out mask.nii.gz` gets them in mask.labels.json."""
    from napari_fewshot.cli import main

    folder, volume, labels, _ = made_series
    support = np.where(np.isin(labels, [1, 2]), labels, 0).astype(np.uint8)
    support[[1, 2, 4]] = 0
    table = ClassTable({1: "liver", 2: "spleen"}, {1: (0.9, 0.6, 0.1, 1.0), 2: (0.2, 0.4, 0.9, 1.0)})
    write_mask(tmp_path / "earlier.dcm", support, like=volume, classes=table)
    args = ["--support", str(tmp_path / "earlier.dcm"), "--device", "cpu", "--input-size", "160"]
    assert main(["segment", str(folder), *args, "--out", str(tmp_path / "mask.dcm")]) == 0, capsys.readouterr().err
    back = read_volume(tmp_path / "mask.dcm")
    assert back.data.shape == labels.shape and set(np.unique(back.data)) == {0, 1, 2}
    assert back.meta["classes"].names == table.names
    assert main(["segment", str(folder), *args, "--out", str(tmp_path / "mask.nii.gz")]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "mask.nii.gz", like=volume), back.data)
    assert read_sidecar(tmp_path / "mask.nii.gz").names == table.names
    assert main(["segment", str(CT_IMAGE), *args, "--out", str(tmp_path / "ct.dcm")]) == 2  # not DICOM: refused
    assert "save the mask as NIfTI" in capsys.readouterr().err and not (tmp_path / "ct.dcm").exists()


def test_batch_with_dicom_seg_writes_a_seg_per_dicom_series(made_series, tmp_path, monkeypatch, capsys):
    import distributed

    from napari_fewshot.cli import main
    from napari_fewshot.core.bank import PrototypeBank
    from napari_fewshot.core.config import SegmentationParams

    folder, volume, labels, names = made_series
    support = np.where(labels == 1, 1, 0).astype(np.uint8)
    support[1:5] = 0
    bank = PrototypeBank.build([(volume.data, support)], SegmentationParams(device="cpu", input_size=160),
                               class_names={1: "liver"}, class_colours={1: (0.9, 0.2, 0.2)})
    bank_path = bank.save(tmp_path / "liver.fewshot")
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "patient1").symlink_to(folder, target_is_directory=True)
    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: real(**{**kw, "processes": False}))
    out = tmp_path / "out"
    assert main(["batch", str(bank_path), str(cohort), str(out), "--dicom-seg", "--workers", "1",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    seg = hd.seg.segread(out / "patient1.dcm")
    assert [d.segment_label for d in seg.SegmentSequence] == ["liver"]
    back = read_volume(out / "patient1.dcm")
    assert back.data.shape == labels.shape and back.data.any()
    np.testing.assert_allclose(back.meta["display_affine"], volume.meta["display_affine"], atol=1e-4)


def test_the_snomed_codes_are_those_of_the_dicom_code_dictionary():
    """Every code the table shares with pydicom's DICOM code dictionary (what highdicom uses) is that code;
    right/left kidney and urinary bladder, which the dictionary lacks, are SNOMED CT's body structures."""
    from pydicom.sr.codedict import codes

    from napari_fewshot.io.dicom_seg import KNOWN_PROPERTIES

    checked = 0
    for category, kind in KNOWN_PROPERTIES.values():
        for value, meaning in (category, kind):
            keyword = "".join(word.capitalize() for word in meaning.replace("-", " ").split())
            code = getattr(codes.SCT, keyword, None)
            if code is not None:
                assert code.value == value, (meaning, code)
                checked += 1
    assert checked >= 30
    assert {kind for _, kind in KNOWN_PROPERTIES.values()} >= {("9846003", "Right kidney"),
                                                                ("18639004", "Left kidney")}
