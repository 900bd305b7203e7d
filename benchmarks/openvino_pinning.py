"""LiteMedSAM's image encoder on OpenVINO with CPU pinning on and off, in one process and in several at once.

    python benchmarks/openvino_pinning.py [--processes 2] [--threads 1] [--repeats 10] [--json OUT]

Each process compiles the image encoder's IR through the tool's own path (LiteMedSAMService; converted once into the
cache folder) with the tool's configuration (core/sam_runtime.openvino_setup), pinning on or off, and times `--repeats` passes on a
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
    from napari_fewshot.core import sam_runtime
    from napari_fewshot.core.sam_service import LiteMedSAMService

    tool_setup = sam_runtime.openvino_setup

    def setup(ov_module, precision=sam_runtime.PRECISION):  # the tool's configuration, pinning as asked
        version, count, core, config = tool_setup(ov_module, precision)
        return version, count, core, {**config, sam_runtime.PINNING: pinned}

    sam_runtime.openvino_setup = setup  # the service's own path compiles its cached IR (converted if need be)
    runtime = LiteMedSAMService("cpu").encoder_runtime()
    if not runtime.name.startswith("openvino"):
        raise SystemExit(f"OpenVINO does not run the encoder here: {runtime.status}")
    compiled = runtime.compiled
    assert compiled.get_property(sam_runtime.PINNING) is pinned
    x = torch.rand(1, 3, sam_runtime.SIDE, sam_runtime.SIDE).numpy()
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
