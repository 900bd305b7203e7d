"""`batch` never replaces what the user has, and refuses before it computes (#22).

A mask corrected by hand after a run is kept on every later run (status "edited"); another bank over
existing masks needs --overwrite, which replaces only the batch's own masks; the output folder inside the
input folder (or an earlier run's) is not searched for scans, nor are BUSI's NAME_mask.png files;
--workers 0 and an unreachable scheduler are refused before any row is marked pending; SIGTERM ends a
batch like Ctrl-C. Small synthetic PNG cohorts (see test_batch_attacks) keep this quick.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_fewshot.batch import run_batch
from napari_fewshot.batch_results import mask_digest
from napari_fewshot.cli import main
from napari_fewshot.cohort import find_scans
from napari_fewshot.errors import FewShotError

from test_batch_attacks import (bank_path, client, disc_bank, disc_image, one_error_line, read_csv,  # noqa: F401
                                signal_a_running_batch, write_cohort)

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def other_bank_path(tmp_path_factory) -> Path:
    """A second bank (another painted image): another signature than `bank_path`'s."""
    return disc_bank(tmp_path_factory.mktemp("other_bank"), 7)


def quiet(_line: str) -> None:
    pass


def hand_corrected(path: Path) -> bytes:
    """Overwrite the mask at `path` with a hand-made one (a square: still a valid mask); its bytes."""
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    Image.fromarray(mask).save(path)
    return path.read_bytes()


# -- item 3: a mask edited after the run is the user's ------------------------------------------------
def test_a_mask_edited_after_the_run_is_kept_and_reported(bank_path, other_bank_path, tmp_path, client):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 2)
    first = run_batch(bank_path, inputs, out, client=client, device="cpu", log=quiet)
    assert sorted(first.done) == ["scan_001.png", "scan_002.png"]
    corrected = hand_corrected(out / "scan_002.png")
    write_cohort(inputs, 3)  # a scan added to the cohort: scan_003.png
    lines = []
    again = run_batch(bank_path, inputs, out, client=client, device="cpu", log=lines.append)
    assert again.done == ["scan_003.png"] and again.skipped == ["scan_001.png"] and again.edited == ["scan_002.png"]
    assert (out / "scan_002.png").read_bytes() == corrected
    row = read_csv(out / "results.csv")["scan_002.png"]
    assert row["status"] == "edited" and "kept" in row["error"] and row["disc_ml"] == ""
    assert any(line.startswith("scan_002.png: ") and "edited" in line and "kept" in line for line in lines), lines
    assert "1 edited mask(s) kept (scan_002.png)" in lines[-1], lines[-1]
    # and again, even with another bank and overwrite: the correction stays, the batch's own masks go
    third = run_batch(other_bank_path, inputs, out, client=client, device="cpu", log=quiet, overwrite=True)
    assert sorted(third.done) == ["scan_001.png", "scan_003.png"] and third.edited == ["scan_002.png"]
    assert (out / "scan_002.png").read_bytes() == corrected
    assert read_csv(out / "results.csv")["scan_002.png"]["status"] == "edited"


# -- item 4: another bank over existing masks -------------------------------------------------------
def test_another_bank_needs_overwrite_which_replaces_only_the_batchs_masks(bank_path, other_bank_path, tmp_path,
                                                                           client, monkeypatch, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 2)
    run_batch(bank_path, inputs, out, client=client, device="cpu", log=quiet)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    before_rows = read_csv(out / "results.csv")
    first_files = {p.name: p.stat().st_ino for p in out.glob("scan_*.png")}
    with monkeypatch.context() as patched:
        _refuse_compute(patched)
        assert main(["batch", str(other_bank_path), str(inputs), str(out)]) == 2
        err = one_error_line(capsys)
        assert "another bank" in err and "--overwrite" in err and "scan_001.png" in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        (inputs / "scan_009.png").write_bytes((inputs / "scan_001.png").read_bytes())
        (out / "scan_009.png").write_bytes(b"a mask the batch did not write")  # no row: never replaced
        assert main(["batch", str(other_bank_path), str(inputs), str(out), "--overwrite"]) == 2
        assert "never replaces files it did not write" in one_error_line(capsys)
    (out / "scan_009.png").unlink()
    (inputs / "scan_009.png").unlink()
    report = run_batch(other_bank_path, inputs, out, client=client, device="cpu", log=quiet, overwrite=True)
    assert sorted(report.done) == ["scan_001.png", "scan_002.png"]
    banks = {r["bank"] for r in read_csv(out / "results.csv").values()}
    assert len(banks) == 1 and banks != {before_rows["scan_001.png"]["bank"]}
    # Each mask was written again (a new file put in its place): both banks may well draw the same disc, since
    # LiteMedSAM outlines the object each finds (they did once propose and select redrew its pick, session 18).
    assert all((out / name).stat().st_ino != inode for name, inode in first_files.items()), first_files
    rows = read_csv(out / "results.csv")
    assert all(rows[name]["mask_sha256"] == mask_digest(out / name) for name in first_files)


def _refuse_compute(patch) -> None:
    """What the `no_compute` fixture does, for a part of a test."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was computed before the inputs and outputs were checked")

    import napari_fewshot.batch as batch

    for owner, name in ((distributed, "LocalCluster"), (distributed, "Client"), (batch, "segment_file")):
        patch.setattr(owner, name, refuse)


# -- wrong without a word: what is searched for scans -----------------------------------------------
def test_the_output_folder_inside_the_input_folder_is_not_searched(bank_path, tmp_path, client, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cohort(tmp_path / "cohort", 2)
    first = run_batch(bank_path, "cohort", "cohort/masks", client=client, device="cpu", log=quiet)
    assert sorted(first.done) == ["scan_001.png", "scan_002.png"]
    write_cohort(tmp_path / "cohort", 3)
    again = run_batch(bank_path, "cohort", "cohort/masks", client=client, device="cpu", log=quiet)
    assert again.done == ["scan_003.png"] and sorted(again.skipped) == ["scan_001.png", "scan_002.png"]
    assert set(read_csv(tmp_path / "cohort/masks/results.csv")) == {"scan_001.png", "scan_002.png", "scan_003.png"}
    # a later run into another folder does not take the first run's masks for scans either
    lines = []
    third = run_batch(bank_path, "cohort", "cohort/masks_v2", client=client, device="cpu", log=lines.append)
    assert sorted(third.done) == ["scan_001.png", "scan_002.png", "scan_003.png"]
    assert any("masks" in line and "earlier batch" in line for line in lines), lines


def test_busi_mask_files_in_a_batch_folder_are_not_scans(tmp_path):
    image, disc = disc_image(1)
    for name in ("benign (1).png", "benign (2).png"):
        Image.fromarray(image).save(tmp_path / name)
    for name in ("benign (1)_mask.png", "benign (1)_mask_1.png", "benign (2)_mask.png"):
        Image.fromarray(disc.astype(np.uint8) * 255).save(tmp_path / name)
    left_out = []
    assert [s.name for s in find_scans(tmp_path, left_out=left_out)] == ["benign (1).png", "benign (2).png"]
    assert sorted(name for name, _ in left_out) == ["benign (1)_mask.png", "benign (1)_mask_1.png",
                                                    "benign (2)_mask.png"]


# -- wrong without a word: refusals before anything is marked pending --------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_workers_or_no_scheduler_is_refused_before_any_row_is_pending(bank_path, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 2)
    assert main(["batch", str(bank_path), str(inputs), str(out), "--workers", "0"]) == 2
    assert "--workers" in one_error_line(capsys)
    assert not (out / "results.csv").exists()
    with pytest.raises(FewShotError, match="Cannot reach the dask scheduler"):
        run_batch(bank_path, inputs, out, scheduler=f"tcp://127.0.0.1:{free_port()}", connect_timeout=2, log=quiet)
    assert not (out / "results.csv").exists()


def test_sigterm_ends_the_batch_like_ctrl_c(bank_path, tmp_path):
    """SIGTERM to the batch alone (`kill PID`): one line, exit 143 (128 + SIGTERM), the workers closed, the
    unfinished scans left "pending" (never "ok")."""
    import psutil

    _, out, status, err, workers = signal_a_running_batch(bank_path, tmp_path,
                                                          lambda pid: os.kill(pid, signal.SIGTERM))
    assert status == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-fewshot: terminated: "), err
    assert "run the same command" in lines[0], err
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker processes left running: {alive}"
    rows = read_csv(out / "results.csv")
    statuses = [r["status"] for r in rows.values()]
    assert set(statuses) <= {"ok", "pending"} and "pending" in statuses
    assert all((out / name).exists() for name, row in rows.items() if row["status"] == "ok")
