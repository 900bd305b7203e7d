"""Cohort segmentation with a prototype bank on dask.distributed: one task per scan.

    napari-fewshot batch BANK INPUT_DIR OUTPUT_DIR [--scheduler ADDRESS] [--workers N] [--device D] [--overwrite]

    from napari_fewshot.batch import run_batch
    report = run_batch("liver.fewshot", "cohort/", "masks/", workers=2)       # embedded LocalCluster
    report = run_batch("liver.fewshot", "cohort/", "masks/", scheduler="tcp://10.0.0.5:8786")

- Each scan goes through napari_fewshot.pipeline.segment_file, as `segment` does.
- Scans and their masks: see napari_fewshot.cohort (each real file or folder once; the input folder
  itself when it is a DICOM series; not the output folder, an earlier batch's output or BUSI mask files).
  Two scans that would share a mask name are refused before anything is computed, naming both.
- What happens to each mask (napari_fewshot.batch_plan), decided and checked before any compute: done
  ones are skipped; the batch's own unfinished ones redone; a mask edited after the batch wrote it (its
  checksum differs from results.csv's) is kept, never replaced, and reported per scan (status
  "edited"); masks written with another bank are replaced only with ``overwrite`` (else one sentence,
  nothing computed); a file without a row is never replaced (the batch refuses to start, naming it).
- ``OUTPUT_DIR/results.csv`` (see napari_fewshot.batch_results): a row per scan, written through
  io.atomic after every scan; scans about to be segmented are marked "pending" first, once the workers
  are there (--workers 0 or an unreachable scheduler is refused before any row changes).
- Masks are written through io.atomic (never half a file under its name; permissions follow the umask),
  read back and checksummed.
- A failure (corrupt file, out of memory, a worker dying) is recorded in its row and the other scans
  go on; ``BatchReport.failed`` lists them (the CLI then exits with status 3).
- Ctrl-C or SIGTERM (napari_fewshot.batch_signals) cancels the tasks, closes the workers and raises
  KeyboardInterrupt (Terminated for SIGTERM) with one line to print; unfinished rows stay "pending".
- Dask: an embedded ``LocalCluster`` (N worker processes, 1 thread each) unless a scheduler address is
  given. The bank file's bytes are sent to every worker once; each worker builds the encoder once per
  bank (cached on the worker object) and reuses it for every scan it gets. Workers read the scans and
  write the masks themselves, so with a real cluster INPUT_DIR and OUTPUT_DIR must be on a file system
  every worker sees, at the same paths.
"""

from __future__ import annotations


import contextlib
import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .batch_plan import OutputPlan, plan_outputs
from .batch_results import (CSV_NAME, class_columns, edited_row, header, make_row, mask_digest, read_results,
                            write_results)
from .batch_signals import stop_signals, uninterrupted
from .cohort import Scan, check_unique_masks, find_scans
from .errors import FewShotError
from .pipeline import segment_file

_WORKER_CACHE = "_napari_fewshot_bank"  # attribute on a dask Worker: (key, bank, segmenter)


# -- the dask side ---------------------------------------------------------------------------------
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
                 torch_threads: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """The dask task for one scan: never raises for a bad scan; returns a result dict with status ok | error
    (and, when ok, the mask's relative-to-`out_path` name in "written" and its checksum in "mask_sha256").

    overwrite: replace a mask already at `out_path` (the batch's own earlier attempt); otherwise the mask
    is created exclusively, so a file that appeared meanwhile is never replaced.
    """
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
        info.update(segment_file(bank, segmenter, scan_path, out_path, overwrite=overwrite))
        mask = Path(info["mask"])  # a PNG set is its folder
        info.update(status="ok", error="", mask_path=str(mask), mask_sha256=mask_digest(mask))
    except FewShotError as err:
        info.update(status="error", error=str(err))
    except MemoryError:
        info.update(status="error", error="out of memory")
    except Exception as err:  # a bug or an unreadable file the readers did not foresee: record it, go on
        info.update(status="error", error=f"{type(err).__name__}: {err}",
                    traceback="".join(traceback.format_exception(err))[-4000:])
    info["total_seconds"] = time.perf_counter() - started
    return info


# -- the batch ---------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What a batch did: `rows` (the CSV, by scan), `done` (scans segmented now), `skipped` (already done),
    `failed` (errors now), `edited` (masks edited after the batch wrote them: kept), `results` (scan name
    -> the task's result dict, timings included), `seconds`, `workers` (number of dask workers used),
    `csv` (its path), `duplicates` ((name, scan it is another name of) for files reached twice through
    symlinks)."""

    rows: dict[str, dict[str, Any]]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    csv: Path | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.skipped) + len(self.edited)


@dataclass
class DaskOptions:
    """Where the tasks run: `client` (an existing distributed.Client, left open), else `scheduler` (an
    address, connected within `connect_timeout` seconds), else an embedded LocalCluster of `workers`
    processes; `device` and `torch_threads` for each worker."""

    scheduler: str | None = None
    workers: int = 2
    device: str = "auto"
    torch_threads: int | None = None
    client: Any = None
    connect_timeout: float = 30.0

    def check(self) -> None:
        """FewShotError (one sentence) for options no cluster can run with, before anything is started."""
        if self.client is None and not self.scheduler:
            if self.workers < 1:
                raise FewShotError(f"--workers must be at least 1, not {self.workers}.")
            from .core.devices import resolve_device

            resolve_device(self.device)  # the embedded workers share this machine: check the device here


@dataclass
class _Job:
    """What every task of one batch shares."""

    bank: Any
    bank_bytes: bytes
    bank_key: str
    output_dir: Path
    columns: dict[int, str]
    csv_header: list[str]


def run_batch(bank_path: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
              scheduler: str | None = None, workers: int = 2, device: str = "auto",
              torch_threads: int | None = None, client=None, log: Callable[[str], None] = print,
              connect_timeout: float = 30.0, overwrite: bool = False, dicom_seg: bool = False) -> BatchReport:
    """Segment every scan under `input_dir` with the bank at `bank_path` on dask.distributed.

    scheduler: address of a running dask scheduler ("tcp://host:8786"); None starts an embedded
        LocalCluster of `workers` processes with one thread each (closed at the end).
    client: an existing distributed.Client to use instead (left open).
    device: torch device on the workers ("auto", "cpu", "cuda" ...).
    torch_threads: torch threads per worker; default for the LocalCluster: CPU cores // workers
        (dask sets OMP_NUM_THREADS=1 in its workers), left to the workers with a scheduler.
    overwrite: replace the batch's own masks written with another bank (never an edited mask, never a
        file without a row in results.csv).
    dicom_seg: write each DICOM scan's mask as a DICOM SEG (``NAME.dcm``, referring to the scan's images)
        instead of NIfTI; other scans keep their formats.
    Returns a :class:`BatchReport`; the CSV is OUTPUT_DIR/results.csv. Scans already done are skipped.
    FewShotError (nothing computed, no row changed) for a bad bank, colliding mask names, unwritable
    outputs, masks of another bank without `overwrite`, no workers or an unreachable scheduler;
    KeyboardInterrupt (one line of text; batch_signals.Terminated after SIGTERM) once the workers are closed.
    """
    options = DaskOptions(scheduler, workers, device, torch_threads, client, connect_timeout)
    with stop_signals():
        return _run_batch(Path(bank_path), Path(input_dir), Path(output_dir), options, log, overwrite, dicom_seg)


def _run_batch(bank_path: Path, input_dir: Path, output_dir: Path, options: DaskOptions,
               log: Callable[[str], None], overwrite: bool, dicom_seg: bool = False) -> BatchReport:
    from .core.bank import PrototypeBank

    started = time.perf_counter()
    options.check()
    if not bank_path.is_file():
        raise FewShotError(f"The prototype bank {bank_path} does not exist.")
    bank_bytes = bank_path.read_bytes()
    bank = PrototypeBank.from_bytes(bank_bytes, str(bank_path))  # fail early on a bad bank
    bank_key = hashlib.sha256(bank_bytes).hexdigest()[:16]
    if output_dir.exists() and output_dir.resolve() == input_dir.resolve():
        raise FewShotError("The output folder must differ from the input folder (masks would be taken for scans).")
    duplicates: list[tuple[str, str]] = []
    left_out: list[tuple[str, str]] = []
    scans = find_scans(input_dir, exclude=output_dir, duplicates=duplicates, left_out=left_out)
    if dicom_seg:
        scans = [as_dicom_seg(scan) for scan in scans]
    check_unique_masks(scans)
    csv_path = output_dir / CSV_NAME
    rows = read_results(csv_path)
    plan = plan_outputs(output_dir, scans, rows, bank_key, overwrite, max_label=max(bank.class_ids, default=0))
    columns = class_columns(bank)
    job = _Job(bank, bank_bytes, bank_key, output_dir, columns, header(columns))
    report = BatchReport(rows, skipped=plan.done, edited=plan.edited, csv=csv_path, duplicates=duplicates)
    for name in plan.edited:
        rows[name] = edited_row(rows[name], columns)
    _log_plan(log, input_dir, scans, plan, bank, duplicates, left_out)
    if plan.todo:
        _segment(report, plan, job, options, log)
    else:
        write_results(csv_path, rows, job.csv_header)
    report.seconds = time.perf_counter() - started
    kept = f", {len(report.edited)} edited mask(s) kept ({_listed(report.edited)})" if report.edited else ""
    log(f"done: {len(report.done)} segmented, {len(report.failed)} failed, {len(report.skipped)} skipped{kept} in "
        f"{report.seconds:.1f} s -> {csv_path}")
    return report


def as_dicom_seg(scan: Scan) -> Scan:
    """`scan` with its mask named ``NAME.dcm`` (a DICOM SEG) when it is DICOM (a series folder or a file)."""
    from .io.formats import format_named, format_of

    if scan.kind != "dicom" and getattr(format_of(scan.name, "read"), "name", None) != "dicom":
        return scan
    return replace(scan, mask=scan.name + format_named("dicom_seg").extension)


def _log_plan(log: Callable[[str], None], input_dir: Path, scans: Sequence[Scan], plan: OutputPlan, bank,
              duplicates: list[tuple[str, str]], left_out: list[tuple[str, str]]) -> None:
    edited = f", {len(plan.edited)} edited since the batch wrote them (kept)" if plan.edited else ""
    log(f"{len(scans)} scan(s) under {input_dir}: {len(plan.done)} already done, {len(plan.todo)} to segment"
        f"{edited}; {bank.describe()}")
    for name, first in duplicates:
        log(f"{name} is another name of {first} (a symlink): segmented once, as {first}")
    for why in sorted({why for _, why in left_out}):
        names = [name for name, reason in left_out if reason == why]
        log(f"not a scan, {why}: {len(names)} ({_listed(names)})")
    for name in plan.edited:
        log(f"{name}: its mask was edited after the batch wrote it (its checksum differs from {CSV_NAME}): "
            "kept, not replaced")


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _segment(report: BatchReport, plan: OutputPlan, job: _Job, options: DaskOptions,
             log: Callable[[str], None]) -> None:
    """Start or reach the workers, then mark the scans pending and run them (report and CSV updated in
    place). KeyboardInterrupt / Terminated with one line of text once the workers are closed."""
    rows, marked = report.rows, False
    try:
        with _dask_client(options) as (client, torch_threads, n_workers):
            report.workers = n_workers
            log(f"dask: {n_workers} worker(s) at {client.scheduler.address}"
                + (f", {torch_threads} torch thread(s) each" if torch_threads else ""))
            for scan in plan.todo:
                rows[scan.name] = make_row(scan, {"status": "pending"}, job.columns, job.bank_key, rows.get(scan.name))
            write_results(report.csv, rows, job.csv_header)
            marked = True
            _run_tasks(report, client, plan, job, options.device, torch_threads, log)
    except KeyboardInterrupt as stop:
        left = len(plan.todo) - len(report.done) - len(report.failed)
        text = (f"{len(report.done)} scan(s) segmented, {left} left; {report.csv} is kept: run the same command "
                "again to go on") if marked else "nothing was segmented"
        raise type(stop)(text) from None


@contextlib.contextmanager
def _dask_client(options: DaskOptions):
    """(client, torch threads per worker or None, number of workers): the given client, a connection to
    the scheduler or an embedded LocalCluster; what was started here is closed at the end."""
    from distributed import Client, LocalCluster

    client, cluster, torch_threads = options.client, None, options.torch_threads
    try:
        if client is None and options.scheduler:
            try:
                client = Client(options.scheduler, timeout=options.connect_timeout)
            except (OSError, TimeoutError) as err:
                raise FewShotError(f"Cannot reach the dask scheduler at {options.scheduler} ({err}).") from err
        elif client is None:
            torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // options.workers)
            with uninterrupted():
                # No dashboard; the scheduler's small HTTP server on a free port, not a warning about 8787.
                cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                                       silence_logs=50)
                client = Client(cluster)
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) if _accepts_n_workers(client) \
            else len(client.scheduler_info()["workers"])
        yield client, torch_threads, n_workers
    finally:
        with uninterrupted():
            if options.client is None and client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()


def _run_tasks(report: BatchReport, client, plan: OutputPlan, job: _Job, device: str, torch_threads: int | None,
               log: Callable[[str], None]) -> None:
    """Submit one task per scan and record each result as it comes (report and CSV updated in place);
    the tasks left are cancelled when this ends early."""
    from distributed import as_completed

    rows, futures = report.rows, {}
    try:
        shared = client.scatter(job.bank_bytes, broadcast=True, hash=False)
        for scan in plan.todo:
            out = job.output_dir / scan.mask
            key = f"fewshot-{job.bank_key}-{hashlib.sha1(scan.name.encode()).hexdigest()[:12]}"
            future = client.submit(segment_task, shared, job.bank_key, str(scan.path), str(out), device,
                                   torch_threads, plan.replace[scan.name], key=key, pure=False, retries=0)
            futures[future] = scan
        for n, future in enumerate(as_completed(futures), start=1):
            scan = futures[future]
            try:
                result = future.result()
            except Exception as err:  # the task itself died (worker killed, lost connection ...)
                result = {"status": "error", "error": f"task failed: {type(err).__name__}: {err}"}
            if result.get("status") == "ok":
                result["mask"] = Path(result["mask_path"]).relative_to(job.output_dir).as_posix()
            rows[scan.name] = make_row(scan, result, job.columns, job.bank_key, rows.get(scan.name))
            report.results[scan.name] = result
            (report.done if result.get("status") == "ok" else report.failed).append(scan.name)
            write_results(report.csv, rows, job.csv_header)
            log(_progress_line(n, len(plan.todo), scan, result, job.bank))
    finally:
        if futures:
            with uninterrupted(), contextlib.suppress(Exception):
                client.cancel(list(futures))


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _progress_line(n: int, total: int, scan: Scan, result: dict, bank) -> str:
    head = f"[{n}/{total}] {scan.name}: "
    if result.get("status") != "ok":
        return head + f"error: {result.get('error')}"
    volumes = ", ".join(f"{bank.class_names[c]} {v:.1f} mL" for c, v in result["volumes_ml"].items())
    return head + f"ok in {result.get('total_seconds', 0):.1f} s ({volumes})"


__all__ = ["BatchReport", "CSV_NAME", "DaskOptions", "Scan", "class_columns", "find_scans", "read_results",
           "run_batch", "segment_task"]
