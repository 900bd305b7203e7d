"""Nothing the user has is replaced or deleted, and every refusal of an output comes before compute (#22).

Each test reproduces one case of the issue: an output that is an input, a PNG set over the user's folder,
a kill between the renames of a PNG set's replacement, an existing heatmap, a long or unwritable name, a
label a PNG cannot hold, a symlink loop, a bank into a read-only folder, numbers out of range. CLI tests run
on a 10-slice crop of a CHAOS-T2 case (slices 15-24 of case 1, the liver painted on two of them).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fewshot.cli import main
from napari_fewshot.errors import WriteError
from napari_fewshot.io import read_labels, read_volume, write_mask

from shared_data import CHAOS, require

FAST = ["--input-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def mr(tmp_path_factory) -> Path:
    """A folder ``scans/`` holding ``mr.nii.gz`` (10 slices of CHAOS-T2 case 1) and ``mr_support.nii.gz``
    (the liver painted on slices 2 and 7)."""
    folder = tmp_path_factory.mktemp("mr") / "scans"
    folder.mkdir()
    nib.save(nib.load(require(CHAOS) / "image_1.nii.gz").slicer[:, :, 15:25], folder / "mr.nii.gz")
    nib.save(nib.load(CHAOS / "label_1.nii.gz").slicer[:, :, 15:25], folder / "labels.nii.gz")
    volume = read_volume(folder / "mr.nii.gz")
    crop = read_labels(folder / "labels.nii.gz", like=volume)
    (folder / "labels.nii.gz").unlink()
    support = np.zeros_like(crop)
    for z in (2, 7):
        support[z] = crop[z] == 1
    assert support.any()
    write_mask(folder / "mr_support.nii.gz", support, like=volume)
    return folder


@pytest.fixture
def scans(mr, tmp_path) -> Path:
    """A private copy of ``scans/`` (tests change and compare it)."""
    copy = tmp_path / "scans"
    shutil.copytree(mr, copy)
    return copy


@pytest.fixture
def no_compute(monkeypatch):
    """Computing features fails the test: every refusal must come before."""
    from napari_fewshot.core.segmenter import FewShotSegmenter

    def refuse(*args, **kwargs):
        raise AssertionError("features were computed before the outputs were checked")

    monkeypatch.setattr(FewShotSegmenter, "compute_features", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("napari-fewshot: error:") and "Traceback" not in err, err
    return err


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def segment(scans: Path, out, *extra: str) -> int:
    return main(["segment", str(scans / "mr.nii.gz"), "--support", str(scans / "mr_support.nii.gz"),
                 "--out", str(out), *FAST, *extra])


# -- 1. an output that is an input -------------------------------------------------------------------
@pytest.mark.parametrize("which", ["mr_support.nii.gz", "mr.nii.gz"])
def test_an_output_that_is_an_input_is_refused(scans, which, no_compute, capsys):
    before = contents(scans)
    assert segment(scans, scans / which, "--overwrite") == 2
    assert "it is the input" in one_error_line(capsys)
    (scans.parent / "link.nii.gz").symlink_to(scans / which)  # the same file under another name
    assert segment(scans, scans.parent / "link.nii.gz", "--overwrite") == 2
    assert "it is the input" in one_error_line(capsys)
    assert contents(scans) == before


def test_a_heatmap_that_is_an_input_is_refused(scans, no_compute, capsys):
    (scans.parent / "maps").mkdir()
    (scans.parent / "maps" / "heatmap_class1.nii.gz").symlink_to(scans / "mr_support.nii.gz")
    before = contents(scans)
    assert segment(scans, scans.parent / "m.nii.gz", "--heatmaps", str(scans.parent / "maps"), "--overwrite") == 2
    assert "it is the input" in one_error_line(capsys)
    assert contents(scans) == before and not (scans.parent / "m.nii.gz").exists()


# -- 2. --overwrite never replaces a folder the tool did not write -------------------------------------
def test_a_png_set_over_the_users_folder_is_refused(scans, no_compute, capsys):
    before = contents(scans)
    assert segment(scans, scans.parent / "scans.png", "--overwrite") == 2
    assert "holds the input" in one_error_line(capsys)
    assert contents(scans) == before


def test_overwrite_replaces_only_a_set_of_the_tools_own_files(tmp_path):
    mask = np.zeros((3, 6, 7), np.uint8)
    mask[:, 2:4, 2:5] = 1
    folder = tmp_path / "seg"
    folder.mkdir()
    (folder / "seg_0000.png").write_bytes(b"an old slice")
    (folder / "notes.txt").write_text("the user's notes")
    with pytest.raises(WriteError, match="never replaced"):
        write_mask(tmp_path / "seg.png", mask, overwrite=True)
    assert (folder / "notes.txt").read_text() == "the user's notes"
    (folder / "notes.txt").unlink()
    (folder / "sub").mkdir()  # a folder inside is not the tool's either
    with pytest.raises(WriteError, match="never replaced"):
        write_mask(tmp_path / "seg.png", mask, overwrite=True)
    (folder / "sub").rmdir()
    written = write_mask(tmp_path / "seg.png", mask, overwrite=True)  # only STEM_NNNN.png: the tool's set
    assert sorted(p.name for p in folder.iterdir()) == ["seg_0000.png", "seg_0001.png", "seg_0002.png"]
    assert np.array_equal(np.stack([read_volume(p).data[0] for p in written]), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


# -- 8. a kill between the two renames of a PNG set's replacement ------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: no handler of the writer runs (it catches OSError only)."""


def test_a_kill_between_the_renames_of_a_png_set_loses_nothing(tmp_path, monkeypatch):
    from napari_fewshot.io.targets import check_target

    old, new = np.zeros((3, 6, 7), np.uint8), np.zeros((3, 6, 7), np.uint8)
    old[:, 1:3, 1:3], new[:, 3:5, 3:6] = 1, 2
    target = tmp_path / "seg.png"
    write_mask(target, old)
    real_rename, renames = os.rename, []

    def rename(source, destination):
        renames.append((source, destination))
        if len(renames) == 2:  # the old set is aside, the new one not yet in place
            raise Killed()
        return real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(Killed):
        write_mask(target, new, overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (tmp_path / "seg").exists()  # what a kill leaves: nothing under the name ...
    assert any(".set.old." in p.name for p in tmp_path.iterdir())  # ... the old set aside

    check_target(target, 3, overwrite=True)  # the next run's check puts the old set back
    assert [p.name for p in tmp_path.iterdir()] == ["seg"]
    assert np.array_equal(np.stack([read_volume(p).data[0] for p in sorted((tmp_path / "seg").iterdir())]), old)
    write_mask(target, new, overwrite=True)  # and the run then writes the new one
    assert np.array_equal(np.stack([read_volume(p).data[0] for p in sorted((tmp_path / "seg").iterdir())]), new)
    assert [p.name for p in tmp_path.iterdir()] == ["seg"]


def test_a_kill_leaves_the_old_set_for_the_next_write_too(tmp_path, monkeypatch):
    """Without a check first (the widget, the API), the next write_mask recovers the old set before
    deciding: without overwrite it is refused as existing, so the old set is not lost."""
    old = np.ones((2, 4, 4), np.uint8)
    target = tmp_path / "seg.png"
    write_mask(target, old)
    real_rename, calls = os.rename, []

    def rename(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise Killed()
        return real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(Killed):
        write_mask(target, old * 2, overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    with pytest.raises(WriteError, match="exists"):
        write_mask(target, old * 3)
    assert np.array_equal(np.stack([read_volume(p).data[0] for p in sorted((tmp_path / "seg").iterdir())]), old)


# -- refusals that came after compute --------------------------------------------------------------
def test_an_existing_heatmap_is_refused_before_compute(scans, no_compute, capsys):
    maps = scans.parent / "maps"
    maps.mkdir()
    (maps / "heatmap_class1.nii.gz").write_bytes(b"an earlier heatmap")
    assert segment(scans, scans.parent / "m.nii.gz", "--heatmaps", str(maps)) == 2
    assert "heatmap_class1.nii.gz" in one_error_line(capsys)
    assert not (scans.parent / "m.nii.gz").exists()
    assert (maps / "heatmap_class1.nii.gz").read_bytes() == b"an earlier heatmap"


def test_a_legal_252_character_name_is_written(scans, capsys):
    out = scans.parent / ("m" * 245 + ".nii.gz")
    assert len(out.name) == 252
    assert segment(scans, out) == 0, capsys.readouterr().err
    assert read_labels(out, like=read_volume(scans / "mr.nii.gz"))[[2, 7]].any()
    assert sorted(p.name for p in scans.parent.iterdir()) == sorted(["scans", out.name])  # no temporary left


def test_a_png_set_whose_slice_names_are_too_long_is_refused_before_compute(scans, no_compute, capsys):
    out = scans.parent / ("m" * 248 + ".png")  # legal, but m..m_0000.png is 257 bytes
    assert segment(scans, out) == 2
    assert "more than the 255" in one_error_line(capsys)


def test_a_label_a_png_cannot_hold_is_refused_before_compute(scans, no_compute, capsys):
    volume = read_volume(scans / "mr.nii.gz")
    support = read_labels(scans / "mr_support.nii.gz", like=volume).astype(np.uint32) * 70000
    write_mask(scans / "big.nii.gz", support, like=volume)
    assert main(["segment", str(scans / "mr.nii.gz"), "--support", str(scans / "big.nii.gz"),
                 "--out", str(scans.parent / "m.png"), *FAST]) == 2
    assert "up to 65535" in one_error_line(capsys)


def test_an_out_symlink_loop_is_refused_before_compute(scans, no_compute, capsys):
    loop = scans.parent / "loop.nii.gz"
    loop.symlink_to(loop)
    for extra in ((), ("--overwrite",)):
        assert segment(scans, loop, *extra) == 2
        assert "symbolic link" in one_error_line(capsys)
    assert loop.is_symlink()


def test_a_300_character_name_is_one_sentence(scans, no_compute, capsys):
    assert segment(scans, scans.parent / ("m" * 293 + ".nii.gz")) == 2
    assert "more than the 255" in one_error_line(capsys)


@pytest.mark.parametrize("option, value, message", [
    ("--input-size", "100000", "--input-size must be from 32 to 2048"),
    ("--scale", "nan", "--scale must be from"),
    ("--scale", "inf", "--scale must be from"),
    ("--smooth-slices", "nan", "--smooth-slices must be from"),
])
def test_numbers_out_of_range_are_one_sentence(scans, no_compute, capsys, option, value, message):
    args = ["segment", str(scans / "mr.nii.gz"), "--support", str(scans / "mr_support.nii.gz"),
            "--out", str(scans.parent / "m.nii.gz"), "--device", "cpu", option, value]
    assert main(args) == 2
    assert message in one_error_line(capsys)


def test_params_refuse_non_finite_numbers():
    from napari_fewshot.core.config import RefineParams, SegmentationParams
    from napari_fewshot.core.training_config import AdaptParams, FineTuneParams
    from napari_fewshot.errors import FewShotError

    for make in (lambda: SegmentationParams(scale=float("nan")), lambda: SegmentationParams(local_coverage=float("inf")),
                 lambda: RefineParams(max_growth=float("inf")), lambda: FineTuneParams(alignment_weight=float("nan")),
                 lambda: AdaptParams(superpixel_scale=float("nan"))):
        with pytest.raises(FewShotError, match="finite"):
            make()


def test_a_bank_into_a_read_only_folder_is_refused_before_building(mr, monkeypatch):
    from napari_fewshot.core.bank import PrototypeBank
    from test_batch_attacks import as_unprivileged

    monkeypatch.setattr(PrototypeBank, "build", lambda *a, **k: pytest.fail("built before checking --out"))
    top = Path(tempfile.mkdtemp(prefix="fewshot-read-only-"))  # under /tmp: the user nobody can get there
    os.chmod(top, 0o755)
    for name in ("mr.nii.gz", "mr_support.nii.gz"):
        shutil.copy(mr / name, top / name)
        os.chmod(top / name, 0o644)
    folder = top / "shared"
    folder.mkdir()
    os.chmod(folder, 0o555)

    def check() -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["bank", str(top / "mr.nii.gz"), "--support", str(top / "mr_support.nii.gz"),
                         "--out", str(folder / "liver.fewshot"), "--device", "cpu"])
        return f"{code} {err.getvalue().strip()}"

    try:
        message = as_unprivileged(check)
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(top)
    assert message.startswith("2 napari-fewshot: error:") and "not writable" in message, message


def test_batch_checks_the_labels_a_png_holds_before_compute(tmp_path, monkeypatch, capsys):
    """batch's plan asks the same helper: a bank whose classes go past 65535 and a PNG cohort."""
    pytest.importorskip("distributed")
    from PIL import Image

    import napari_fewshot.batch as batch
    from napari_fewshot.core import SegmentationParams
    from napari_fewshot.core.bank import PrototypeBank

    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 200
    support = (image > 0).astype(np.uint32) * 70000
    bank = PrototypeBank.build([(image[None], support[None])], SegmentationParams(device="cpu", image_input_size=64))
    bank_path = bank.save(tmp_path / "big.fewshot")
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    monkeypatch.setattr(batch, "segment_file", lambda *a, **k: pytest.fail("segmented before checking"))
    assert main(["batch", str(bank_path), str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    assert "up to 65535" in one_error_line(capsys)


# -- the widget's exports ask the same helper ------------------------------------------------------
@pytest.mark.gui
def test_an_export_onto_the_scan_itself_is_refused(scans, notes, monkeypatch):
    from napari.layers import Labels

    from napari_fewshot.plugin import VOLUME_KEY
    from napari_fewshot.plugin.exporting import export_prediction

    volume = read_volume(scans / "mr.nii.gz")
    layer = Labels(np.ones(volume.data.shape, np.uint8), metadata={VOLUME_KEY: volume})
    before = contents(scans)
    assert export_prediction(None, layer, str(scans / "mr.nii.gz"), overwrite=True) is None
    assert any(s == "error" and "it is the input" in m for s, m in notes), notes
    assert export_prediction(None, layer, str(scans.parent / "scans.png"), overwrite=True) is None
    assert any(s == "error" and "holds the input" in m for s, m in notes), notes
    assert contents(scans) == before
