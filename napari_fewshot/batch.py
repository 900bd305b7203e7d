"""Cohort segmentation with a prototype bank on dask.distributed: one task per scan.

    napari-fewshot batch BANK INPUT_DIR OUTPUT_DIR [--scheduler ADDRESS] [--workers N] [--device D]

    from napari_fewshot.batch import run_batch
    report = run_batch("liver.fewshot", "cohort/", "masks/", workers=2)       # embedded LocalCluster
    report = run_batch("liver.fewshot", "cohort/", "masks/", scheduler="tcp://10.0.0.5:8786")

- Scans: every NIfTI / TIFF / NPY / PNG / JPEG file and every folder holding a DICOM series under
  INPUT_DIR (recursively, symlinks followed). Masks go to the same relative path under OUTPUT_DIR in
  the scan's format: NIfTI -> NIfTI on the scan's grid with its affine, DICOM folder -> ``FOLDER.nii.gz``
  on the series' grid, TIFF -> TIFF, NPY -> NPY, PNG/JPEG -> PNG.
- ``OUTPUT_DIR/results.csv``: one row per scan: scan, mask, status (ok | error), error, seconds, slices,
  voxel_ml, one ``<class>_ml`` column per class of the bank (voxel count x voxel volume from the
  spacing), bank (the bank's signature). Rewritten atomically after every scan.
- Restartable: a scan whose row says ok with this bank and whose mask exists is skipped; failed scans
  and scans without a row are (re)done. A failure (corrupt file, out of memory, a worker dying) is
  recorded in its row and the other scans go on.
- Dask: an embedded ``LocalCluster`` (N worker processes, 1 thread each) unless a scheduler address is
  given. The bank file's bytes are sent to every worker once; each worker builds the encoder once per
  bank (cached on the worker object) and reuses it for every scan it gets. Workers read the scans and
  write the masks themselves, so with a real cluster INPUT_DIR and OUTPUT_DIR must be on a file system
  every worker sees, at the same paths.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import FewShotError
from .io.readers import is_dicom_file

CSV_NAME = "results.csv"
BASE_COLUMNS = ("scan", "mask", "status", "error", "seconds", "slices", "voxel_ml")
_VOLUME_SUFFIXES = {".nii.gz": ".nii.gz", ".nii": ".nii", ".tif": ".tif", ".tiff": ".tiff", ".npy": ".npy",
                    ".png": ".png", ".jpg": ".png", ".jpeg": ".png"}
_WORKER_CACHE = "_napari_fewshot_bank"  # attribute on a dask Worker: (key, bank, segmenter)


# -- scans ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scan:
    """One scan of the cohort: `name` (path relative to the input folder, '/'-separated), `path`,
    `kind` ("file" or "dicom" for a DICOM folder) and `mask` (path relative to the output folder)."""

    name: str
    path: Path
    kind: str
    mask: str


def _suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in _VOLUME_SUFFIXES if lower.endswith(s)), None)


def find_scans(input_dir: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Scan]:
    """Every scan under `input_dir` in sorted order; `exclude` (e.g. the output folder) is not searched."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FewShotError(f"The input folder {root} does not exist.")
    skip = Path(exclude).resolve() if exclude is not None else None
    scans = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        files = sorted(f for f in files if not f.startswith("."))
        relative = here.relative_to(root).as_posix()
        if here != root and any(is_dicom_file(here / f) for f in files):
            scans.append(Scan(relative, here, "dicom", relative + ".nii.gz"))
            continue
        for name in files:
            suffix = _suffix(name)
            if suffix is None:
                continue
            rel = name if relative == "." else f"{relative}/{name}"
            scans.append(Scan(rel, here / name, "file", rel[: -len(suffix)] + _VOLUME_SUFFIXES[suffix]))
    if not scans:
        raise FewShotError(f"No scans (NIfTI, DICOM folders, TIFF, NPY, PNG, JPEG) were found under {root}.")
    return sorted(scans, key=lambda s: s.name)


# -- one scan (runs on a worker, or in-process for `segment --bank`) ---------------------------
def segment_file(bank, segmenter, image_path: str | os.PathLike, out_path: str | os.PathLike,
                 overwrite: bool = False, heatmaps: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read one scan, segment it with `bank` on `segmenter` (from ``bank.make_segmenter``), write the mask
    (and, with a `heatmaps` folder, one similarity map per class: see :func:`write_heatmaps`).

    Returns {"slices", "spacing", "voxel_ml", "volumes_ml": {class id: mL}, "seconds": {read, features,
    matching, write}, "written": [paths], "shape"}. Raises FewShotError on a bad scan.
    """
    import numpy as np

    from .core import run
    from .core.metrics import class_volumes
    from .io import read_volume, write_mask

    timings = {}
    t0 = time.perf_counter()
    volume = read_volume(image_path)
    t1 = time.perf_counter()
    segmenter.set_image(volume.data)
    try:
        run(segmenter.compute_features())
        t2 = time.perf_counter()
        result = run(bank.segment(segmenter, similarity=heatmaps is not None))
    finally:
        segmenter.release_image()  # free the features of this scan
    t3 = time.perf_counter()
    written = write_mask(out_path, result.labels, like=volume, overwrite=overwrite)
    if heatmaps is not None:
        written += write_heatmaps(heatmaps, result, volume, overwrite)
    t4 = time.perf_counter()
    volumes = class_volumes(result.labels, bank.class_ids, volume.spacing)
    timings.update(read=t1 - t0, features=t2 - t1, matching=t3 - t2, write=t4 - t3)
    return {"slices": int(np.shape(result.labels)[0]), "shape": list(volume.data.shape),
            "spacing": list(volume.spacing), "voxel_ml": float(np.prod(volume.spacing)) / 1000.0,
            "volumes_ml": {c: ml for c, (_, ml) in volumes.items()},
            "seconds": timings, "written": [str(p) for p in written]}


def write_heatmaps(folder: str | os.PathLike, result, volume, overwrite: bool = False) -> list:
    """Write `folder`/heatmap_class_C (NIfTI for NIfTI/DICOM scans, else TIFF) per class of a
    SegmentationResult with similarity maps, shaped and placed like the scan `volume`; returns the paths."""
    from pathlib import Path

    from .io import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if volume.format in ("nifti", "dicom") else ".tif"
    written = []
    for c in result.similarity:
        written += write_image(folder / f"heatmap_class_{c}{suffix}", result.similarity_volume(c), like=volume,
                               overwrite=overwrite)
    return written


def _worker_segmenter(bank_bytes: bytes, bank_key: str, device: str, torch_threads: int | None):
    """(bank, segmenter, loaded_now) cached on the dask worker running this task (one bank at a time);
    built fresh, not cached, when not called on a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    key = (bank_key, device, torch_threads)
    cached = getattr(worker, _WORKER_CACHE, None) if worker is not None else None
    if cached is not None and cached[0] == key:
        return cached[1], cached[2], False
    import torch

    from .core.bank import PrototypeBank

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    if worker is not None:
        setattr(worker, _WORKER_CACHE, None)  # drop the previous bank before building the next
    bank = PrototypeBank.from_bytes(bank_bytes)
    segmenter = bank.make_segmenter(device)
    segmenter.encoder  # build it now: once per worker
    if worker is not None:
        setattr(worker, _WORKER_CACHE, (key, bank, segmenter))
    return bank, segmenter, True


def segment_task(bank_bytes: bytes, bank_key: str, scan_path: str, out_path: str, device: str = "auto",
                 torch_threads: int | None = None) -> dict[str, Any]:
    """The dask task for one scan: never raises for a bad scan; returns a result dict with status ok | error."""
    started = time.perf_counter()
    info: dict[str, Any] = {"worker": None, "pid": os.getpid(), "encoder_loaded": False}
    try:
        from distributed import get_worker

        info["worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    try:
        bank, segmenter, loaded = _worker_segmenter(bank_bytes, bank_key, device, torch_threads)
        info["encoder_loaded"] = loaded
        info["setup_seconds"] = time.perf_counter() - started
        info.update(segment_file(bank, segmenter, scan_path, out_path, overwrite=True))
        info.update(status="ok", error="")
    except FewShotError as err:
        info.update(status="error", error=str(err))
    except MemoryError:
        info.update(status="error", error="out of memory")
    except Exception as err:  # a bug or an unreadable file the readers did not foresee: record it, go on
        info.update(status="error", error=f"{type(err).__name__}: {err}",
                    traceback="".join(traceback.format_exception(err))[-4000:])
    info["total_seconds"] = time.perf_counter() - started
    return info


# -- the CSV ---------------------------------------------------------------------------------
def class_columns(bank) -> dict[int, str]:
    """Class id -> CSV column name (``liver_ml``; ``label_3_ml`` for unnamed classes), unique."""
    columns: dict[int, str] = {}
    for c in bank.class_ids:
        base = re.sub(r"[^0-9a-z]+", "_", bank.class_names.get(c, f"label {c}").lower()).strip("_") or f"label_{c}"
        name = f"{base}_ml"
        if name in columns.values() or name in BASE_COLUMNS:
            name = f"{base}_{c}_ml"
        columns[c] = name
    return columns


def read_results(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Rows of a results CSV by scan name ({} when it does not exist or cannot be read)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as handle:
            return {row["scan"]: row for row in csv.DictReader(handle) if row.get("scan")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def write_results(path: Path, rows: dict[str, dict[str, Any]], columns: list[str]) -> None:
    """Write the rows (sorted by scan) atomically: a crash never leaves a half-written CSV."""
    extra = [c for row in rows.values() for c in row if c not in columns]
    header = columns + sorted(set(extra), key=extra.index)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow({k: ("" if v is None else v) for k, v in rows[name].items()})
    os.replace(tmp, path)


def _row(scan: Scan, result: dict[str, Any], columns: dict[int, str], bank_key: str) -> dict[str, Any]:
    row = {"scan": scan.name, "mask": scan.mask if result.get("status") == "ok" else "",
           "status": result.get("status", "error"), "error": " ".join(str(result.get("error", "")).split()),
           "seconds": f"{result.get('total_seconds', 0.0):.2f}", "slices": result.get("slices", ""),
           "voxel_ml": f"{result['voxel_ml']:.6g}" if "voxel_ml" in result else ""}
    volumes = result.get("volumes_ml", {})
    for c, column in columns.items():
        row[column] = f"{volumes[c]:.3f}" if c in volumes else ""
    row["bank"] = bank_key
    return row


# -- the batch ---------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What a batch did: `rows` (the CSV, by scan), `done` (scans segmented now), `skipped` (already done),
    `failed` (errors now), `results` (scan name -> the task's result dict, timings included), `seconds`,
    `workers` (number of dask workers used), `csv` (its path)."""

    rows: dict[str, dict[str, Any]]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    csv: Path | None = None


def run_batch(bank_path: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
              scheduler: str | None = None, workers: int = 2, device: str = "auto",
              torch_threads: int | None = None, client=None, log: Callable[[str], None] = print,
              connect_timeout: float = 30.0) -> BatchReport:
    """Segment every scan under `input_dir` with the bank at `bank_path` on dask.distributed.

    scheduler: address of a running dask scheduler ("tcp://host:8786"); None starts an embedded
        LocalCluster of `workers` processes with one thread each (closed at the end).
    client: an existing distributed.Client to use instead (left open).
    device: torch device on the workers ("auto", "cpu", "cuda" ...).
    torch_threads: torch threads per worker; default for the LocalCluster: CPU cores // workers
        (dask sets OMP_NUM_THREADS=1 in its workers), left to the workers with a scheduler.
    Returns a :class:`BatchReport`; the CSV is OUTPUT_DIR/results.csv. Scans already done are skipped.
    """
    from .core.bank import PrototypeBank

    started = time.perf_counter()
    bank_path = Path(bank_path)
    if not bank_path.is_file():
        raise FewShotError(f"The prototype bank {bank_path} does not exist.")
    bank_bytes = bank_path.read_bytes()
    bank = PrototypeBank.from_bytes(bank_bytes, str(bank_path))  # fail early on a bad bank
    bank_key = hashlib.sha256(bank_bytes).hexdigest()[:16]
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if output_dir.exists() and output_dir.resolve() == input_dir.resolve():
        raise FewShotError("The output folder must differ from the input folder (masks would be taken for scans).")
    scans = find_scans(input_dir, exclude=output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / CSV_NAME
    columns = class_columns(bank)
    header = list(BASE_COLUMNS) + list(columns.values()) + ["bank"]
    rows = read_results(csv_path)
    todo = []
    report = BatchReport(rows, csv=csv_path)
    for scan in scans:
        previous = rows.get(scan.name)
        if previous and previous.get("status") == "ok" and previous.get("bank") == bank_key \
                and (output_dir / previous.get("mask", scan.mask)).exists():
            report.skipped.append(scan.name)
        else:
            todo.append(scan)
    log(f"{len(scans)} scan(s) under {input_dir}: {len(report.skipped)} already done, {len(todo)} to segment; "
        f"{bank.describe()}")
    if not todo:
        write_results(csv_path, rows, header)
        report.seconds = time.perf_counter() - started
        return report

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    own_client = client is None
    try:
        if client is None:
            if scheduler:
                try:
                    client = Client(scheduler, timeout=connect_timeout)
                except (OSError, TimeoutError) as err:
                    raise FewShotError(f"Cannot reach the dask scheduler at {scheduler} ({err}).") from err
            else:
                from .core.devices import resolve_device

                resolve_device(device)  # the embedded workers share this machine: check the device here
                if workers < 1:
                    raise FewShotError(f"--workers must be at least 1, not {workers}.")
                torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // workers)
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
                client = Client(cluster)
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) if _accepts_n_workers(client) \
            else len(client.scheduler_info()["workers"])
        report.workers = n_workers
        log(f"dask: {n_workers} worker(s) at {client.scheduler.address}"
            + (f", {torch_threads} torch thread(s) each" if torch_threads else ""))
        shared = client.scatter(bank_bytes, broadcast=True, hash=False)
        futures = {}
        for scan in todo:
            out = output_dir / scan.mask
            out.parent.mkdir(parents=True, exist_ok=True)
            future = client.submit(segment_task, shared, bank_key, str(scan.path), str(out), device, torch_threads,
                                   key=f"fewshot-{bank_key}-{hashlib.sha1(scan.name.encode()).hexdigest()[:12]}",
                                   pure=False, retries=0)
            futures[future] = scan
        for n, future in enumerate(as_completed(futures), start=1):
            scan = futures[future]
            try:
                result = future.result()
            except Exception as err:  # the task itself died (worker killed, lost connection ...)
                result = {"status": "error", "error": f"task failed: {type(err).__name__}: {err}"}
            rows[scan.name] = _row(scan, result, columns, bank_key)
            report.results[scan.name] = result
            (report.done if result.get("status") == "ok" else report.failed).append(scan.name)
            write_results(csv_path, rows, header)
            log(_progress_line(n, len(todo), scan, result, bank, columns))
    finally:
        if own_client and client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    report.seconds = time.perf_counter() - started
    log(f"done: {len(report.done)} segmented, {len(report.failed)} failed, {len(report.skipped)} skipped in "
        f"{report.seconds:.1f} s -> {csv_path}")
    return report


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _progress_line(n: int, total: int, scan: Scan, result: dict, bank, columns: dict[int, str]) -> str:
    head = f"[{n}/{total}] {scan.name}: "
    if result.get("status") != "ok":
        return head + f"error: {result.get('error')}"
    volumes = ", ".join(f"{bank.class_names[c]} {v:.1f} mL" for c, v in result["volumes_ml"].items())
    return head + f"ok in {result.get('total_seconds', 0):.1f} s ({volumes})"


__all__ = ["BatchReport", "CSV_NAME", "Scan", "class_columns", "find_scans", "read_results", "run_batch",
           "segment_file", "segment_task"]
