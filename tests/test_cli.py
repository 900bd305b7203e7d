"""The CLI contract: commands, flags, outputs, and one-line errors without tracebacks."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_fewshot.cli import main
from napari_fewshot.io import read_labels, read_volume, write_mask
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

from shared_data import CHAOS, CHAOS_CASES, CHAOS_NAMES, require


@pytest.fixture(scope="module")
def ct_support(tmp_path_factory):
    """The upper 40 slices of the CT sample (where the organs are) as a NIfTI, with the liver
    painted on 3 of them; keeps the test quick on 2 cores."""
    folder = tmp_path_factory.mktemp("ct")
    source = nib.load(CT_IMAGE)
    crop = source.slicer[:, :, 72:]
    nib.save(crop, folder / "ct.nii.gz")
    volume = read_volume(folder / "ct.nii.gz")
    labels = read_labels(CT_LABELS, like=read_volume(CT_IMAGE))[72:]
    support = np.zeros_like(labels)
    for z in (5, 18, 33):
        support[z] = labels[z] == 1
    write_mask(folder / "support.nii.gz", support, like=volume)
    return folder, labels, support


def test_segment_writes_a_nifti_on_the_images_grid(ct_support, capsys):
    folder, labels, support = ct_support
    out = folder / "pred.nii.gz"
    heat = folder / "heat"
    image = folder / "ct.nii.gz"
    assert main(["segment", str(image), "--support", str(folder / "support.nii.gz"), "--out", str(out),
                 "--heatmaps", str(heat)]) == 0
    printed = capsys.readouterr().out
    assert "classes [1]" in printed and "mL" in printed and "efficientnet-lite0" in printed
    assert np.allclose(nib.load(out).affine, nib.load(image).affine)
    assert nib.load(out).shape == nib.load(image).shape
    predicted = read_labels(out, like=read_volume(image))
    assert np.array_equal(predicted[[5, 18, 33]], support[[5, 18, 33]])
    inside = slice(8, 30)
    overlap = 2 * ((predicted[inside] == 1) & (labels[inside] == 1)).sum() / ((predicted[inside] == 1).sum() + (labels[inside] == 1).sum())
    assert overlap > 0.6
    heatmap = nib.load(heat / "heatmap_class1.nii.gz").get_fdata()
    assert heatmap.shape == nib.load(image).shape and -1 <= heatmap.min() and heatmap.max() <= 1
    # never overwrite silently
    assert main(["segment", str(image), "--support", str(folder / "support.nii.gz"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("shape", "but the image is"),
    ("empty", "no painted pixels"),
    ("encoder", "Unknown encoder"),
    ("weights", "VGG16 weights file"),
])
def test_errors_are_one_line_and_exit_2(case, message, tmp_path, capsys):
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((4, 40, 40), np.float32))
    support = tmp_path / "support.npy"
    np.save(support, np.zeros((4, 40, 40) if case != "shape" else (4, 30, 40), np.uint8)
            + (0 if case in ("empty",) else 1) * (np.arange(4)[:, None, None] == 1))
    args = ["segment", str(image), "--support", str(support), "--out", str(tmp_path / "o.npy")]
    if case == "missing":
        args[1] = str(tmp_path / "nothing.nii.gz")
    if case == "encoder":
        args += ["--encoder", "unet-9000"]
    if case == "weights":
        args += ["--encoder", "vgg16-panet", "--weights", str(tmp_path / "missing.pth")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("napari-fewshot: error:") and message in err
    assert "Traceback" not in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "napari_fewshot.cli", "segment", str(tmp_path / "x.nii.gz"),
                             "--support", str(tmp_path / "y.nii.gz"), "--out", str(tmp_path / "z.nii.gz")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "no such file" in result.stderr


def test_evaluate_volumes_within_and_across(tmp_path):
    folder = tmp_path / "chaos"
    folder.mkdir()
    for case in CHAOS_CASES:
        for kind in ("image", "label"):
            os.symlink(require(CHAOS) / f"{kind}_{case}.nii.gz", folder / f"{kind}_{case}.nii.gz")
    classes = ",".join(f"{k}:{v}" for k, v in CHAOS_NAMES.items() if k in (1, 4))
    for protocol in ("within", "across"):
        out = tmp_path / f"{protocol}.json"
        assert main(["evaluate", "volumes", str(folder), "--protocol", protocol, "--support-slices", "1",
                     "--classes", classes, "--json", str(out)]) == 0
        report = json.loads(out.read_text())
        assert set(report) == {"dice_mean", "dice_per_class", "cases", "seconds", "config"}
        assert set(report["dice_per_class"]) == {"liver", "spleen"}
        assert report["dice_per_class"]["liver"] > 0.5
        assert len(report["cases"]) == (4 if protocol == "within" else 2)
        assert report["config"]["protocol"] == protocol


def test_evaluate_busi(tmp_path, busi_layout):
    """The BUSI protocol's workflow on PNG slices in BUSI's layout (conftest.busi_layout); accuracy: test_accuracy."""
    out = tmp_path / "busi.json"
    assert main(["evaluate", "busi", str(busi_layout), "--shots", "2", "--episodes", "2", "--seed", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["cases"]) == 2 and all(len(c["supports"]) == 2 for c in report["cases"])
    assert all(c["query"] not in c["supports"] for c in report["cases"])
    assert 0 <= report["dice_mean"] <= 1 and report["config"]["shots"] == 2
    hits = [c for c in report["cases"] if c["hit"]]  # finding the lesion vs drawing it (evaluation/busi.py)
    assert report["hit_rate"] == len(hits) / 2 and report["false_positive_px"] >= 0
    assert report["dice_on_hits"] == (pytest.approx(sum(c["dice"] for c in hits) / len(hits)) if hits else None)
    again = tmp_path / "again.json"
    main(["evaluate", "busi", str(busi_layout), "--shots", "2", "--episodes", "2", "--seed", "1", "--json", str(again)])
    assert json.loads(again.read_text())["cases"] == report["cases"]  # seeded


def test_demo_headless_reports_dice_and_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--headless", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "mean Dice" in printed
    mean = float(printed.split("mean Dice")[1].split()[0])
    assert mean > 0.9  # README: 0.935 with the defaults (refinement on), 2-core CPUs with and without bfloat16
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {"prediction.nii.gz", "support.nii.gz", "heatmap_class1_liver.nii.gz"}


def test_segment_adapts_to_the_scan_first(ct_support, capsys):
    folder, labels, support = ct_support
    out = folder / "adapted.nii.gz"
    assert main(["segment", str(folder / "ct.nii.gz"), "--support", str(folder / "support.nii.gz"), "--out", str(out),
                 "--adapt-steps", "2"]) == 0
    assert "adapted to this scan: 2 steps" in capsys.readouterr().out
    predicted = read_labels(out, like=read_volume(folder / "ct.nii.gz"))
    assert np.array_equal(predicted[[5, 18, 33]], support[[5, 18, 33]])  # the paint stays as painted
    assert main(["bank", str(folder / "ct.nii.gz"), "--support", str(folder / "support.nii.gz"),
                 "--out", str(folder / "b.fewshot"), "--adapt-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--adapt-steps adapts to the scan being segmented" in err and len(err.strip().splitlines()) == 1


def blob_scan(tmp_path, nan=False):
    """(4, 40, 40) float32 scan with a bright square (or every pixel NaN), saved as NPY."""
    volume = np.zeros((4, 40, 40), np.float32)
    volume[:, 10:25, 10:25] = 100
    if nan:
        volume[:] = np.nan
    path = tmp_path / ("nan.npy" if nan else "blob.npy")
    np.save(path, volume)
    return path


def test_an_all_nan_scan_is_refused(tmp_path, capsys):
    image = blob_scan(tmp_path, nan=True)
    support = np.zeros((4, 40, 40), np.uint8)
    support[1, 12:20, 12:20] = 1
    np.save(tmp_path / "support.npy", support)
    out = tmp_path / "mask.npy"
    assert main(["segment", str(image), "--support", str(tmp_path / "support.npy"), "--out", str(out),
                 "--input-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no finite pixel" in err and not out.exists()


def test_scribble_mode_from_the_cli(tmp_path, capsys):
    image = blob_scan(tmp_path)
    support = np.zeros((4, 40, 40), np.uint8)  # every slice has a scribble: organ 2, background 1
    support[:, 14:18, 14:18] = 2
    support[:, 30:34, 30:34] = 1
    np.save(tmp_path / "support.npy", support)
    args = ["segment", str(image), "--support", str(tmp_path / "support.npy"), "--input-size", "64"]
    assert main(args + ["--out", str(tmp_path / "dense.npy")]) == 2  # dense: every slice is complete
    err = capsys.readouterr().err
    assert "Every slice is painted" in err and "--scribble" in err  # the message names the flag that exists
    assert main(args + ["--out", str(tmp_path / "m.npy"), "--background-label", "1"]) == 2
    assert "only applies with --scribble" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "m.npy"), "--scribble"]) == 2  # no guessed background label
    assert "--scribble needs --background-label" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "m.npy"), "--scribble", "--background-label", "1"]) == 0
    mask = np.load(tmp_path / "m.npy")
    assert set(np.unique(mask)) <= {0, 2} and (mask[:, 12:23, 12:23] == 2).mean() > 0.8
    assert not mask[:, 28:38, 28:38].any()


def test_cli_messages_name_cli_flags_not_python_arguments(tmp_path, ct_dicom, capsys):
    import shutil

    import pydicom

    folder = tmp_path / "two_series"
    folder.mkdir()
    files = sorted(ct_dicom.iterdir())[:3]
    for path in files:
        shutil.copy(path, folder)
    ds = pydicom.dcmread(folder / files[0].name)
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1"
    ds.save_as(folder / files[0].name)
    assert main(["segment", str(folder), "--support", str(folder), "--out", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "2 DICOM series" in err and "give each series a folder of its own" in err and "series_uid" not in err
