"""Cohort batch on dask.distributed: an embedded LocalCluster and a scheduler started separately on loopback.

The cohort is built from the data the repository carries: two CHAOS MR scans and the CT sample (cropped to a few
slices to keep the test quick on 2 cores), a DICOM folder (a few files of the example series) and a
corrupt file. Masks from the workers must equal the single-process `segment --bank` path.
"""

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fewshot.batch import CSV_NAME, find_scans, run_batch
from napari_fewshot.cli import main
from napari_fewshot.core import dice
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.io import read_labels, read_volume

from napari_fewshot.sample_data import CT_IMAGE
from test_bank import LIVER, PARAMS, SPLEEN, crop_case, support_of

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bank")
    volume, labels, _ = crop_case("1", folder)
    bank = PrototypeBank.build([(volume.data, support_of(labels, [1, 4]))], PARAMS,
                               class_names={LIVER: "liver", SPLEEN: "spleen"})
    return bank.save(folder / "liver_spleen.fewshot")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """INPUT_DIR with 2 CHAOS scans (6 slices), the CT example (upper 8 slices), a corrupt file; labels aside."""
    root = tmp_path_factory.mktemp("cohort")
    scans, labels_dir = root / "scans", root / "labels"
    (scans / "mr").mkdir(parents=True)
    labels_dir.mkdir()
    labels = {}
    for case in ("1", "5"):
        _, _, (image, label) = crop_case(case, labels_dir, slices=6)
        image.rename(scans / "mr" / image.name)
        labels[f"mr/{image.name}"] = label
    ct = nib.load(CT_IMAGE)
    nib.save(ct.slicer[:, :, 104:], scans / "ct.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 not really a scan" * 20)
    (scans / "notes.txt").write_text("not a scan")
    return scans, labels


def single_process(bank_path, image, out):
    assert main(["segment", str(image), "--bank", str(bank_path), "--out", str(out), "--device", "cpu"]) == 0
    return read_labels(out, like=read_volume(image))


def read_csv(path):
    with open(path, newline="") as handle:
        return {row["scan"]: row for row in csv.DictReader(handle)}


def test_local_cluster_matches_single_process_and_restarts(bank_path, cohort, tmp_path):
    scans, labels = cohort
    assert [s.name for s in find_scans(scans)] == ["broken.nii.gz", "ct.nii.gz", "mr/image_1.nii.gz",
                                                    "mr/image_5.nii.gz"]
    out = tmp_path / "masks"
    lines = []
    report = run_batch(bank_path, scans, out, workers=2, device="cpu", log=lines.append)
    assert report.workers == 2 and sorted(report.done) == ["ct.nii.gz", "mr/image_1.nii.gz", "mr/image_5.nii.gz"]
    assert report.failed == ["broken.nii.gz"] and any(line.startswith("[4/4]") for line in lines)
    # the encoder is built once per worker, not once per scan
    loads = [r["worker"] for r in report.results.values() if r.get("encoder_loaded")]
    assert len(loads) == len(set(loads)) <= 2
    rows = read_csv(out / CSV_NAME)
    assert set(rows) == {"broken.nii.gz", "ct.nii.gz", "mr/image_1.nii.gz", "mr/image_5.nii.gz"}
    assert rows["broken.nii.gz"]["status"] == "error" and "Cannot read" in rows["broken.nii.gz"]["error"]
    assert list(rows["ct.nii.gz"])[:10] == ["scan", "mask", "status", "error", "seconds", "slices", "voxel_ml",
                                            "liver_ml", "spleen_ml", "bank"]
    for name, label_path in labels.items():
        row = rows[name]
        assert row["status"] == "ok" and row["error"] == "" and float(row["seconds"]) > 0
        mask_file = out / row["mask"]
        assert mask_file.name == Path(name).name  # NIfTI in -> NIfTI out, same relative path
        image = scans / name
        assert np.allclose(nib.load(mask_file).affine, nib.load(image).affine)
        assert nib.load(mask_file).shape == nib.load(image).shape
        volume = read_volume(image)
        mask = read_labels(mask_file, like=volume)
        voxel_ml = np.prod(volume.spacing) / 1000
        assert float(row["liver_ml"]) == pytest.approx((mask == LIVER).sum() * voxel_ml, abs=1e-3)
        assert float(row["spleen_ml"]) == pytest.approx((mask == SPLEEN).sum() * voxel_ml, abs=1e-3)
        truth = read_labels(label_path, like=volume)
        alone = single_process(bank_path, image, tmp_path / f"alone_{Path(name).name}")
        for c in (LIVER, SPLEEN):
            assert abs(dice(mask == c, truth == c) - dice(alone == c, truth == c)) <= 1e-6
        assert np.mean(mask != alone) < 1e-5
        assert dice(mask == LIVER, truth == LIVER) > 0.6
    assert rows["ct.nii.gz"]["status"] == "ok" and int(rows["ct.nii.gz"]["slices"]) == 8

    # restart: nothing to do but the failed scan; a lost mask is redone, the other rows are kept
    before = read_csv(out / CSV_NAME)
    (out / "mr" / "image_5.nii.gz").unlink()
    (scans / "broken.nii.gz").unlink()
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # in-process this time: no second spawn of torch workers
        again = run_batch(bank_path, scans, out, client=client, device="cpu", log=lines.append)
    assert again.done == ["mr/image_5.nii.gz"] and again.failed == []
    assert sorted(again.skipped) == ["ct.nii.gz", "mr/image_1.nii.gz"]
    after = read_csv(out / CSV_NAME)
    assert after["ct.nii.gz"] == before["ct.nii.gz"] and after["mr/image_1.nii.gz"] == before["mr/image_1.nii.gz"]
    assert after["mr/image_5.nii.gz"]["liver_ml"] == before["mr/image_5.nii.gz"]["liver_ml"]
    third = run_batch(bank_path, scans, out, workers=1, log=lines.append)  # all done: no cluster started
    assert third.done == [] and third.workers == 0 and len(third.skipped) == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_scheduler(tmp_path):
    """`dask scheduler` + one `dask worker` as subprocesses on 127.0.0.1; always terminated."""
    dask_cli = Path(sys.executable).with_name("dask")
    if not dask_cli.exists():
        pytest.skip("the dask command is not installed beside this Python")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    logs = [open(tmp_path / name, "w") for name in ("scheduler.log", "worker.log")]
    procs = []
    try:
        procs.append(subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port",
                                       address.rsplit(":", 1)[1], "--no-dashboard", "--no-show"],
                                      stdout=logs[0], stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen([str(dask_cli), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                       "--nworkers", "1", "--no-dashboard", "--no-nanny", "--death-timeout", "60"],
                                      stdout=logs[1], stderr=subprocess.STDOUT, env=env))
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(1, timeout=max(1, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    pytest.fail("the loopback dask scheduler/worker did not start:\n"
                                + (tmp_path / "scheduler.log").read_text()[-2000:]
                                + (tmp_path / "worker.log").read_text()[-2000:])
                time.sleep(1)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in logs:
            log.close()


def test_separate_scheduler_on_loopback_and_dicom_folder(bank_path, cohort, loopback_scheduler, ct_dicom, tmp_path,
                                                          capsys):
    scans, _ = cohort
    inputs = tmp_path / "in"
    dicom = inputs / "patient_7" / "ct_series"
    dicom.mkdir(parents=True)
    series = sorted(ct_dicom.iterdir())
    for f in series[8:11]:  # 3 slices of the series are a DICOM series too
        os.symlink(f, dicom / f.name)
    os.symlink(scans / "mr" / "image_1.nii.gz", inputs / "image_1.nii.gz")
    out = tmp_path / "out"
    assert main(["batch", str(bank_path), str(inputs), str(out), "--scheduler", loopback_scheduler,
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"1 worker(s) at {loopback_scheduler}" in printed and "[2/2]" in printed
    rows = read_csv(out / CSV_NAME)
    assert {name: row["status"] for name, row in rows.items()} == {"patient_7/ct_series": "ok", "image_1.nii.gz": "ok"}
    mask_file = out / "patient_7" / "ct_series.nii.gz"  # DICOM folder in -> NIfTI out
    assert rows["patient_7/ct_series"]["mask"] == "patient_7/ct_series.nii.gz" and mask_file.exists()
    volume = read_volume(dicom)
    mask = read_labels(mask_file, like=volume)
    assert mask.shape == volume.data.shape == (3, 101, 122)
    assert float(rows["patient_7/ct_series"]["voxel_ml"]) == pytest.approx(np.prod(volume.spacing) / 1000, rel=1e-4)
    assert float(rows["image_1.nii.gz"]["liver_ml"]) > 0


def test_batch_errors_are_one_line(bank_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(bank_path), str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert "No scans" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nothing.fewshot"), str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_batch_on_a_folder_that_is_a_dicom_series_segments_it(bank_path, ct_dicom, tmp_path, monkeypatch, capsys):
    """The input folder itself holds the series: one scan (not "No scans"), masked as FOLDER.nii.gz."""
    import distributed

    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: real(**{**kw, "processes": False}))
    series = tmp_path / "ct_series"
    series.mkdir()
    for f in sorted(ct_dicom.iterdir())[8:11]:
        os.symlink(f, series / f.name)
    out = tmp_path / "out"
    assert main(["batch", str(bank_path), str(series), str(out), "--workers", "1", "--device", "cpu"]) == 0
    rows = read_csv(out / CSV_NAME)
    assert {n: r["status"] for n, r in rows.items()} == {"ct_series": "ok"}
    assert rows["ct_series"]["mask"] == "ct_series.nii.gz"
    assert read_labels(out / "ct_series.nii.gz", like=read_volume(series)).shape == (3, 101, 122)
