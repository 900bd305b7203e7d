"""Cohort segmentation with a prototype bank on dask.distributed: one task per scan.

    napari-fewshot batch BANK INPUT_DIR OUTPUT_DIR [--scheduler ADDRESS] [--workers N] [--device D]

    from napari_fewshot.batch import run_batch
    report = run_batch("liver.fewshot", "cohort/", "masks/", workers=2)       # embedded LocalCluster
    report = run_batch("liver.fewshot", "cohort/", "masks/", scheduler="tcp://10.0.0.5:8786")

- Each scan goes through napari_fewshot.pipeline.segment_file, as `segment` does.
- Scans and their masks: see napari_fewshot.cohort (each real file or folder once; the input folder
  itself when it is a DICOM series). Two scans that would share a mask name are refused before anything
  is computed, naming both.
- Before any compute the outputs are checked (the output folder can be created and written, no folder
  or foreign file has a mask's name); one sentence and nothing computed when they cannot be written.
- ``OUTPUT_DIR/results.csv`` (see napari_fewshot.batch_results): a row per scan, written through
  io.atomic after every scan; scans about to be segmented are marked "pending" first.
- Masks are written through io.atomic (never half a file under its name; permissions follow the umask),
  read back and checksummed. A restart skips a scan only when its row says ok with this bank and its
  mask still has that checksum; everything else is redone. A mask file that exists without a row is
  never replaced (it is not the batch's): the batch refuses to start and names it.
- A failure (corrupt file, out of memory, a worker dying) is recorded in its row and the other scans
  go on; ``BatchReport.failed`` lists them (the CLI then exits with status 3).
- Ctrl-C cancels the tasks, closes the workers and raises KeyboardInterrupt with one line to print.
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
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .batch_results import (CSV_NAME, class_columns, header, make_row, mask_digest, mask_is_done, read_results,
                            write_results)
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
        written = [Path(p) for p in info["written"]]
        mask = written[0] if len(written) == 1 else written[0].parent  # a PNG set is its folder
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
    `failed` (errors now), `results` (scan name -> the task's result dict, timings included), `seconds`,
    `workers` (number of dask workers used), `csv` (its path), `duplicates` ((name, scan it is another
    name of) for files reached twice through symlinks)."""

    rows: dict[str, dict[str, Any]]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    csv: Path | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.skipped)


def check_outputs(output_dir: Path, scans: Sequence[Scan], rows: dict[str, dict[str, str]]) -> None:
    """Before any compute: the output folder can be made and written, and every mask can be written there.
    A mask file that exists without a row in results.csv is not the batch's and is never replaced."""
    try:
        _check_outputs(output_dir, scans, rows)
    except OSError as err:  # e.g. a folder on the way that may not be entered
        raise FewShotError(f"Cannot use the output folder {output_dir} ({err.strerror or err}).") from err


def _check_outputs(output_dir: Path, scans: Sequence[Scan], rows: dict[str, dict[str, str]]) -> None:
    from .io.writers import check_mask_target, check_writable

    if output_dir.exists() and not output_dir.is_dir():
        raise FewShotError(f"The output folder {output_dir} is a file; give a folder for the masks.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FewShotError(f"Cannot create the output folder {output_dir} ({err.strerror or err}).") from err
    if (output_dir / CSV_NAME).is_dir():
        raise FewShotError(f"{output_dir / CSV_NAME} is a folder; the batch writes its results there.")
    check_writable(output_dir / CSV_NAME)
    foreign = []
    for scan in scans:
        target = output_dir / scan.mask
        ours = scan.name in rows
        if target.exists() and not target.is_dir() and not ours:
            foreign.append(scan.mask)
            continue
        check_mask_target(target, 1 if scan.kind == "file" else None, overwrite=ours)
    if foreign:
        raise FewShotError(f"{len(foreign)} mask file(s) already in {output_dir} are not in its {CSV_NAME} "
                           f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); the batch never "
                           "replaces files it did not write: move them away or choose another output folder.")


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
    FewShotError (nothing computed) for a bad bank, colliding mask names or unwritable outputs;
    KeyboardInterrupt (one line of text) after Ctrl-C, the workers closed.
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
    duplicates: list[tuple[str, str]] = []
    scans = find_scans(input_dir, exclude=output_dir, duplicates=duplicates)
    check_unique_masks(scans)
    csv_path = output_dir / CSV_NAME
    rows = read_results(csv_path)
    check_outputs(output_dir, scans, rows)
    columns = class_columns(bank)
    csv_header = header(columns)
    report = BatchReport(rows, csv=csv_path, duplicates=duplicates)
    todo = []
    for scan in scans:
        previous = rows.get(scan.name)
        (report.skipped if previous and mask_is_done(output_dir, previous, bank_key) else todo).append(scan)
    report.skipped = [s.name for s in report.skipped]
    log(f"{len(scans)} scan(s) under {input_dir}: {len(report.skipped)} already done, {len(todo)} to segment; "
        f"{bank.describe()}")
    for name, first in duplicates:
        log(f"{name} is another name of {first} (a symlink): segmented once, as {first}")
    if not todo:
        write_results(csv_path, rows, csv_header)
        report.seconds = time.perf_counter() - started
        return report
    overwrite = {scan.name: scan.name in rows for scan in todo}  # a row: the mask there is the batch's own
    for scan in todo:
        rows[scan.name] = make_row(scan, {"status": "pending"}, columns, bank_key)
    write_results(csv_path, rows, csv_header)
    try:
        _run_tasks(report, todo, overwrite, bank, bank_bytes, bank_key, output_dir, columns, csv_header,
                   scheduler, workers, device, torch_threads, client, log, connect_timeout)
    except KeyboardInterrupt:
        left = len(todo) - len(report.done) - len(report.failed)
        raise KeyboardInterrupt(f"{len(report.done)} scan(s) segmented, {left} left; {csv_path} is kept: run the "
                                "same command again to go on") from None
    report.seconds = time.perf_counter() - started
    log(f"done: {len(report.done)} segmented, {len(report.failed)} failed, {len(report.skipped)} skipped in "
        f"{report.seconds:.1f} s -> {csv_path}")
    return report


def _run_tasks(report: BatchReport, todo: list[Scan], overwrite: dict[str, bool], bank, bank_bytes: bytes,
               bank_key: str, output_dir: Path, columns: dict[int, str], csv_header: list[str],
               scheduler: str | None, workers: int, device: str, torch_threads: int | None, client,
               log: Callable[[str], None], connect_timeout: float) -> None:
    """Submit one task per scan and record each result as it comes (report and CSV updated in place)."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    own_client = client is None
    futures: dict = {}
    rows = report.rows
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
                with _ignoring_ctrl_c():
                    # No dashboard; the scheduler's small HTTP server on a free port, not a warning about 8787.
                    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                                           silence_logs=50)
                client = Client(cluster)
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) if _accepts_n_workers(client) \
            else len(client.scheduler_info()["workers"])
        report.workers = n_workers
        log(f"dask: {n_workers} worker(s) at {client.scheduler.address}"
            + (f", {torch_threads} torch thread(s) each" if torch_threads else ""))
        shared = client.scatter(bank_bytes, broadcast=True, hash=False)
        for scan in todo:
            out = output_dir / scan.mask
            future = client.submit(segment_task, shared, bank_key, str(scan.path), str(out), device, torch_threads,
                                   overwrite[scan.name],
                                   key=f"fewshot-{bank_key}-{hashlib.sha1(scan.name.encode()).hexdigest()[:12]}",
                                   pure=False, retries=0)
            futures[future] = scan
        for n, future in enumerate(as_completed(futures), start=1):
            scan = futures[future]
            try:
                result = future.result()
            except Exception as err:  # the task itself died (worker killed, lost connection ...)
                result = {"status": "error", "error": f"task failed: {type(err).__name__}: {err}"}
            if result.get("status") == "ok":
                result["mask"] = Path(result["mask_path"]).relative_to(output_dir).as_posix()
            rows[scan.name] = make_row(scan, result, columns, bank_key)
            report.results[scan.name] = result
            (report.done if result.get("status") == "ok" else report.failed).append(scan.name)
            write_results(report.csv, rows, csv_header)
            log(_progress_line(n, len(todo), scan, result, bank))
    finally:
        with _ignoring_ctrl_c():
            if futures and client is not None:
                with contextlib.suppress(Exception):
                    client.cancel(list(futures))
            if own_client and client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()


@contextlib.contextmanager
def _ignoring_ctrl_c():
    """SIGINT ignored inside (main thread only). Worker processes started inside inherit that: Ctrl-C in a
    terminal goes to the whole process group, and the batch, not each worker with its own traceback,
    decides what happens (it closes them). Closing the workers runs inside too, so a second Ctrl-C cannot
    leave them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _progress_line(n: int, total: int, scan: Scan, result: dict, bank) -> str:
    head = f"[{n}/{total}] {scan.name}: "
    if result.get("status") != "ok":
        return head + f"error: {result.get('error')}"
    volumes = ", ".join(f"{bank.class_names[c]} {v:.1f} mL" for c, v in result["volumes_ml"].items())
    return head + f"ok in {result.get('total_seconds', 0):.1f} s ({volumes})"


__all__ = ["BatchReport", "CSV_NAME", "Scan", "check_outputs", "class_columns", "find_scans", "read_results",
           "run_batch", "segment_task"]
