"""Attacks on `batch` and the CLI's outputs (#12): each once lost a mask, mixed two up, or hid a failure.

Small synthetic PNG cohorts (64 x 64, a bright disc on noise) and a bank pooled from one of them keep
these quick; the dask cluster runs in this process except where the attack needs real worker processes
(Ctrl-C, a killed batch), which run the CLI as a subprocess.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_fewshot.batch import run_batch
from napari_fewshot.batch_plan import plan_outputs
from napari_fewshot.cli import main
from napari_fewshot.cohort import Scan, check_unique_masks, find_scans
from napari_fewshot.core import SegmentationParams
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.errors import FewShotError
from napari_fewshot.io import read_labels
from napari_fewshot.io.sidecar import sidecar_path

distributed = pytest.importorskip("distributed")


def disc_image(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image: noise with a bright disc somewhere; and the disc's mask."""
    rng = np.random.default_rng(seed)
    image = (rng.random((size, size)) * 60).astype(np.uint8)
    y, x = np.mgrid[:size, :size]
    disc = (y - (20 + seed % 20) * size / 64) ** 2 + (x - (25 + seed % 15) * size / 64) ** 2 < (12 * size / 64) ** 2
    image[disc] = 200 + image[disc] // 4
    return image, disc


def write_cohort(folder: Path, n: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, n + 1):
        paths.append(folder / f"scan_{i:03d}.png")
        Image.fromarray(disc_image(i, size)[0]).save(paths[-1])
    return paths


def disc_bank(folder: Path, seed: int) -> Path:
    """A bank painted on `disc_image(seed)`, saved in `folder`: each seed gives another bank signature."""
    image, disc = disc_image(seed)
    bank = PrototypeBank.build([(image[None], disc[None].astype(np.uint8))],
                               SegmentationParams(device="cpu", image_input_size=64), class_names={1: "disc"})
    return bank.save(folder / f"disc_{seed}.fewshot")


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> Path:
    return disc_bank(tmp_path_factory.mktemp("bank"), 0)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def in_process_workers(monkeypatch):
    """`batch` from the CLI on an in-process LocalCluster (no worker processes to spawn)."""
    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: real(**{**kw, "processes": False}))


@pytest.fixture
def no_compute(monkeypatch):
    """Any cluster, client or segmentation started from here on fails the test: checks come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was computed before the inputs and outputs were checked")

    import napari_fewshot.batch as batch

    for owner, name in ((distributed, "LocalCluster"), (distributed, "Client"), (batch, "segment_file")):
        monkeypatch.setattr(owner, name, refuse)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["scan"]: row for row in csv.DictReader(handle)}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("napari-fewshot: error:") and "Traceback" not in err, err
    return err


# -- 1. two scans, one mask name ------------------------------------------------------------------
def test_colliding_mask_names_are_refused_before_any_compute(bank_path, tmp_path, no_compute, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 1)
    image = disc_image(1)[0]
    Image.fromarray(image).save(inputs / "x.png")
    Image.fromarray(image).save(inputs / "x.jpg")  # both would write x.png
    series = inputs / "sub" / "series"
    series.mkdir(parents=True)
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 300)  # a DICOM folder -> sub/series.nii.gz
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)), inputs / "sub" / "series.nii.gz")
    assert main(["batch", str(bank_path), str(inputs), str(out)]) == 2
    err = one_error_line(capsys)
    assert "x.jpg and x.png" in err and "sub/series and sub/series.nii.gz" in err and "2 mask name(s)" in err
    assert not out.exists() or not any(out.iterdir())


def test_names_differing_only_in_case_are_one_mask():
    scans = [Scan(n, Path(n), "file", n) for n in ("A.png", "a.png", "b.png")]
    with pytest.raises(FewShotError, match="A.png and a.png"):
        check_unique_masks(scans)
    check_unique_masks(scans[1:])


# -- 2. failures are not success -----------------------------------------------------------------
def test_failed_scans_exit_3_and_say_how_many(bank_path, tmp_path, in_process_workers, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 2)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    assert main(["batch", str(bank_path), str(inputs), str(out), "--device", "cpu"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-fewshot: 1 of 3 scan(s) failed (broken.png); see ") and len(err) == 1
    rows = read_csv(out / "results.csv")
    assert rows["broken.png"]["status"] == "error" and rows["scan_001.png"]["status"] == "ok"


# -- 3. symlink loops ------------------------------------------------------------------------------
def test_symlink_loops_and_aliases_give_each_scan_once(bank_path, tmp_path, client):
    inputs = tmp_path / "in"
    write_cohort(inputs, 1)
    write_cohort(inputs / "deeper", 1)
    os.symlink("..", inputs / "deeper" / "up")  # a loop back to the top
    os.symlink(".", inputs / "again")           # a loop onto itself
    os.symlink("scan_001.png", inputs / "alias.png")  # a second name of one file
    duplicates = []
    scans = find_scans(inputs, duplicates=duplicates)
    assert [s.name for s in scans] == ["deeper/scan_001.png", "scan_001.png"]
    assert duplicates == [("alias.png", "scan_001.png")]
    lines = []
    report = run_batch(bank_path, inputs, tmp_path / "out", client=client, device="cpu", log=lines.append)
    assert sorted(report.done) == ["deeper/scan_001.png", "scan_001.png"] and report.failed == []
    assert any("alias.png is another name of scan_001.png" in line for line in lines)
    assert set(read_csv(tmp_path / "out" / "results.csv")) == {"deeper/scan_001.png", "scan_001.png"}


# -- 4. a restart trusts only complete masks -------------------------------------------------------
def test_restart_redoes_a_truncated_mask(bank_path, tmp_path, client):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 3)
    first = run_batch(bank_path, inputs, out, client=client, device="cpu", log=lambda _: None)
    assert len(first.done) == 3
    truncated = out / "scan_002.png"
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])  # what a kill mid-write used to leave
    again = run_batch(bank_path, inputs, out, client=client, device="cpu", log=lambda _: None)
    assert again.done == ["scan_002.png"] and sorted(again.skipped) == ["scan_001.png", "scan_003.png"]
    assert truncated.read_bytes() == whole and read_labels(truncated).shape == (1, 64, 64)


# -- 5 / 6. outputs: checked first, never replacing what the batch did not write -------------------
def test_outputs_are_checked_before_any_compute(bank_path, tmp_path, no_compute, capsys):
    inputs = tmp_path / "in"
    write_cohort(inputs, 2)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["batch", str(bank_path), str(inputs), str(afile)]) == 2
    assert "is a file" in one_error_line(capsys)
    out = tmp_path / "out"
    (out / "scan_001.png").mkdir(parents=True)  # a folder where a mask goes
    assert main(["batch", str(bank_path), str(inputs), str(out)]) == 2
    assert "scan_001.png" in (err := one_error_line(capsys)) and "folder of that name" in err
    (out / "scan_001.png").rmdir()
    (out / "scan_002.png").write_bytes(b"a clinician's own mask")
    assert main(["batch", str(bank_path), str(inputs), str(out)]) == 2
    err = one_error_line(capsys)
    assert "scan_002.png" in err and "never replaces files it did not write" in err
    assert (out / "scan_002.png").read_bytes() == b"a clinician's own mask"


def as_unprivileged(check) -> str:
    """Run check() -> message where permissions apply: here, or (root ignores permission bits) in a
    forked child that dropped to the user nobody. Returns the message check() returned."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        code = 1
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, check().encode())
            code = 0
        except BaseException as err:  # noqa: BLE001 - reported to the parent through the pipe
            os.write(write, repr(err).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    return message


def test_a_read_only_output_folder_is_refused_before_any_compute():
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="fewshot-read-only-"))  # under /tmp: the user nobody can get there
    os.chmod(top, 0o755)
    folder = top / "shared"
    folder.mkdir()
    os.chmod(folder, 0o555)
    scans = [Scan("a.png", folder / "a.png", "file", "a.png")]

    def check() -> str:
        messages = []
        for out in (folder, folder / "masks"):
            try:
                plan_outputs(out, scans, {})
            except FewShotError as err:
                messages.append(str(err))
        return "\n".join(messages)

    try:
        messages = as_unprivileged(check).splitlines()
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(top)
    assert len(messages) == 2 and all("not writable" in m or "Cannot create" in m for m in messages), messages


def test_segment_checks_its_outputs_before_reading_or_computing(tmp_path, monkeypatch, capsys):
    from napari_fewshot.core.segmenter import FewShotSegmenter

    monkeypatch.setattr(FewShotSegmenter, "set_image", lambda *a, **k: pytest.fail("segmented before checking --out"))
    image, support = tmp_path / "image.npy", tmp_path / "support.npy"
    args = ["segment", str(image), "--support", str(support)]  # missing: reading them would fail first
    assert main(args + ["--out", str(tmp_path / "mask.jpg")]) == 2
    assert "extensions" in one_error_line(capsys)
    (tmp_path / "stack").mkdir()  # an earlier PNG stack of `stack.png`
    (tmp_path / "stack" / "stack_0000.png").write_bytes(b"")
    np.save(image, np.zeros((3, 40, 40), np.float32))  # 3 slices: a PNG set, checked before the support is read
    assert main(args + ["--out", str(tmp_path / "stack.png")]) == 2
    err = one_error_line(capsys)
    assert "pass --overwrite" in err and "overwrite=True" not in err
    (tmp_path / "heat").write_text("a file")
    assert main(args + ["--out", str(tmp_path / "m.nii.gz"), "--heatmaps", str(tmp_path / "heat")]) == 2
    assert "--heatmaps" in one_error_line(capsys)


# -- 7 / 8. a killed batch, Ctrl-C ----------------------------------------------------------------
# The batch as a terminal starts it: Ctrl-C raises KeyboardInterrupt. A test run started as a background job of a
# non-interactive shell (`pytest ... &`, nohup) has SIGINT ignored, every child inherits that, and Python then
# installs no Ctrl-C handler: the batch would rightly ignore the test's Ctrl-C and finish (exit 0).
_AS_FROM_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                       "from napari_fewshot.cli import main; sys.exit(main(sys.argv[1:]))")


def start_batch(bank_path: Path, inputs: Path, out: Path) -> subprocess.Popen:
    """The CLI's batch with one real worker process, in its own process group (like a terminal job)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, "batch", str(bank_path), str(inputs), str(out),
                             "--workers", "1", "--device", "cpu", "--torch-threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_for_rows(out: Path, proc: subprocess.Popen, ok: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_csv(out / "results.csv") if (out / "results.csv").exists() else {}
        if sum(r["status"] == "ok" for r in rows.values()) >= ok:
            return rows
        if proc.poll() is not None:
            pytest.fail(f"the batch ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the batch did not get going")


def signal_a_running_batch(bank_path, tmp_path, send) -> tuple[Path, Path, int, str, list]:
    """Start a 24-scan batch in its own process, wait for its first mask, call `send(pid)` (a signal), wait
    for it to end. Returns (input folder, output folder, exit status, stderr, its worker processes)."""
    import psutil

    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cohort(inputs, 24, size=128)
    proc = start_batch(bank_path, inputs, out)
    try:
        wait_for_rows(out, proc, ok=1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "the LocalCluster should run its worker in another process"
        send(proc.pid)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return inputs, out, proc.returncode, err, workers


def test_ctrl_c_then_kill_then_restart(bank_path, tmp_path, client):
    """Ctrl-C: one line, exit 130, the worker processes gone. Then SIGKILL mid-run: the restart finishes
    the cohort, every mask complete and each scan in the CSV once."""
    import psutil

    # what Ctrl-C in a terminal does: SIGINT to the whole foreground group
    inputs, out, status, err, workers = signal_a_running_batch(bank_path, tmp_path,
                                                               lambda pid: os.killpg(pid, signal.SIGINT))
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-fewshot: interrupted: ") and "run the same command" in lines[0], err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker processes left running: {alive}"
    rows = read_csv(out / "results.csv")
    assert {r["status"] for r in rows.values()} <= {"ok", "pending"} and "pending" in {r["status"] for r in rows.values()}

    proc = start_batch(bank_path, inputs, out)  # again, and this time it is killed outright
    try:
        before = sum(r["status"] == "ok" for r in rows.values())
        wait_for_rows(out, proc, ok=before + 2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed = read_csv(out / "results.csv")  # still a whole CSV (written atomically)
    assert sum(r["status"] == "ok" for r in killed.values()) < 24, "the batch ended before it was killed"

    report = run_batch(bank_path, inputs, out, client=client, device="cpu", log=lambda _: None)
    assert report.failed == [] and len(report.done) + len(report.skipped) == 24 and report.done
    rows = read_csv(out / "results.csv")
    assert len(rows) == 24 and {r["status"] for r in rows.values()} == {"ok"}
    for name, row in rows.items():
        assert read_labels(out / row["mask"]).shape == (1, 128, 128), name
    sidecars = [sidecar_path(out / row["mask"]).name for row in rows.values()]  # the bank's class names per mask
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*rows, *sidecars,
                                                                                          "results.csv"])
