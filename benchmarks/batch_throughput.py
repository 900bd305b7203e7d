"""Cohort throughput of `napari-fewshot batch`: scans per minute with 1, 2 ... dask workers, and where the time goes.

    python benchmarks/batch_throughput.py [--cases 2 3 5 8 10 13] [--workers 1 2] [--input-size 256]
                                          [--device cpu] [--torch-threads T] [--json OUT]

A bank is built from CHAOS case 1 (liver and spleen painted on 3 slices); the cohort is the other
CHAOS T2 volumes (256 x 256 x 31-46) from ../shared/data/chaos_t2, symlinked into a temporary
folder. For each worker count a LocalCluster (processes, 1 thread each, CPU cores // workers torch
threads) is started, timed separately, and the batch is run on it. Reported per run: wall seconds
of the batch, scans/minute (batch only, and including the cluster start), and the task time split
into encoder load (once per worker), reading, feature extraction, prototype matching and writing,
summed over tasks; "scheduling" is what the wall time has beyond the busiest worker's task time
(bank broadcast, task dispatch, result collection, CSV writes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_fewshot.batch import run_batch
from napari_fewshot.core import SegmentationParams, dice
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.io import read_labels, read_volume

DATA = Path(os.environ.get("NAPARI_FEWSHOT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def build_bank(folder: Path, input_size: int) -> Path:
    volume = read_volume(DATA / "chaos_t2" / "image_1.nii.gz")
    labels = read_labels(DATA / "chaos_t2" / "label_1.nii.gz", like=volume)
    z = np.flatnonzero((labels == 1).any(axis=(1, 2)))
    picks = [int(z[len(z) // 6]), int(z[len(z) // 2]), int(z[5 * len(z) // 6])]
    support = np.zeros_like(labels)
    support[picks] = np.where(np.isin(labels[picks], (1, 4)), labels[picks], 0)
    bank = PrototypeBank.build([(volume.data, support)], SegmentationParams(device="cpu", input_size=input_size),
                               class_names={1: "liver", 4: "spleen"})
    return bank.save(folder / "bank.fewshot")


def one_run(bank: Path, cohort: Path, out: Path, workers: int, device: str, threads: int | None = None) -> dict:
    from distributed import Client, LocalCluster

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        startup = time.perf_counter() - t0
        report = run_batch(bank, cohort, out, client=client, device=device, torch_threads=threads,
                           log=lambda line: print("   ", line, flush=True))
    total = time.perf_counter() - t0
    ok = [r for r in report.results.values() if r.get("status") == "ok"]
    parts = defaultdict(float)
    per_worker = defaultdict(float)
    for r in ok:
        for k, v in r["seconds"].items():
            parts[k] += v
        if r.get("encoder_loaded"):
            parts["encoder_load"] += r.get("setup_seconds", 0.0)
        per_worker[r["worker"]] += r["total_seconds"]
    busiest = max(per_worker.values()) if per_worker else 0.0
    slices = sum(r["slices"] for r in ok)
    return {
        "workers": workers, "torch_threads": threads, "scans": len(ok), "slices": slices,
        "cluster_start_s": round(startup, 2), "batch_s": round(report.seconds, 2), "total_s": round(total, 2),
        "scans_per_min": round(60 * len(ok) / report.seconds, 2),
        "scans_per_min_with_start": round(60 * len(ok) / total, 2),
        "task_seconds": {k: round(v, 2) for k, v in parts.items()},
        "scheduling_s": round(report.seconds - busiest, 2),
        "ms_per_slice_features": round(1000 * parts["features"] / max(1, slices), 1),
        "ms_per_slice_matching": round(1000 * parts["matching"] / max(1, slices), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["2", "3", "5", "8", "10", "13"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None, help="per worker (default: CPU cores // workers)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cohort = tmp / "cohort"
        cohort.mkdir()
        for case in args.cases:
            os.symlink(DATA / "chaos_t2" / f"image_{case}.nii.gz", cohort / f"image_{case}.nii.gz")
        t0 = time.perf_counter()
        bank = build_bank(tmp, args.input_size)
        print(f"bank built in {time.perf_counter() - t0:.1f} s")
        runs = []
        for workers in args.workers:
            print(f"{workers} worker(s):")
            out = tmp / f"out_{workers}"
            runs.append(one_run(bank, cohort, out, workers, args.device, args.torch_threads))
            scores = [dice(read_labels(out / f"image_{c}.nii.gz", like=read_volume(cohort / f"image_{c}.nii.gz")) == 1,
                           read_labels(DATA / "chaos_t2" / f"label_{c}.nii.gz",
                                       like=read_volume(cohort / f"image_{c}.nii.gz")) == 1) for c in args.cases]
            runs[-1]["liver_dice_mean"] = round(statistics.mean(scores), 3)
            print("   ", json.dumps(runs[-1]))
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "load_average": os.getloadavg(),
              "input_size": args.input_size, "cases": args.cases, "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
