"""LiteMedSAM's image encoder on OpenVINO with CPU pinning on and off, in one process and in several at once.

    python benchmarks/openvino_pinning.py [--processes 2] [--threads 1] [--repeats 10] [--json OUT]

Each process compiles the image encoder's IR (converted once into the cache folder, as the tool does) with the tool's
configuration (core/sam_runtime.openvino_setup) and with pinning turned back on, and times `--repeats` passes on a
(1, 3, 256, 256) input: first one process alone (1 and 2 threads), then `--processes` processes together with
`--threads` each, as a batch's Dask workers run. Reported: each run's median seconds per pass.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time


def passes(pinned: bool, threads: int, repeats: int, queue=None) -> float:
    import torch

    torch.set_num_threads(threads)
    import openvino as ov

    from napari_fewshot.core.sam_runtime import PINNING, SIDE, openvino_setup
    from napari_fewshot.core.sam_service import LiteMedSAMService

    runtime = LiteMedSAMService("cpu").encoder_runtime()  # converts the IR into the cache folder if need be
    if not runtime.name.startswith("openvino"):
        raise SystemExit(f"OpenVINO does not run the encoder here: {runtime.status}")
    from napari_fewshot.core.features import default_cache_dir

    folders = sorted((default_cache_dir() / "sam" / "openvino").glob("*/encoder.xml"), key=os.path.getmtime)
    _, _, core, config = openvino_setup(ov)
    config[PINNING] = pinned
    compiled = core.compile_model(str(folders[-1]), "CPU", config)
    x = torch.rand(1, 3, SIDE, SIDE).numpy()
    compiled(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled(x)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if queue is not None:
        queue.put(median)
    return median


def together(pinned: bool, processes: int, threads: int, repeats: int) -> list[float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=passes, args=(pinned, threads, repeats, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sorted(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "alone": {},
              "together": {}}
    for pinned in (True, False):
        label = "pinned" if pinned else "unpinned (the tool)"
        for threads in (1, 2):
            seconds = together(pinned, 1, threads, args.repeats)[0]
            report["alone"][f"{label}, {threads} threads"] = round(seconds, 3)
            print(f"one process, {label}, {threads} threads: {seconds:.3f} s per pass", flush=True)
        seconds = together(pinned, args.processes, args.threads, args.repeats)
        report["together"][label] = [round(s, 3) for s in seconds]
        print(f"{args.processes} processes at once, {label}, {args.threads} thread(s) each: "
              f"{', '.join(f'{s:.3f}' for s in seconds)} s per pass", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
