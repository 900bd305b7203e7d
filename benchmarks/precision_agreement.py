"""The matching's precisions against each other on the CT sample demo (`napari-fewshot demo --headless`'s
segmentation: 4 organs painted on 3 slices each, segment all with the defaults, refinement on): per organ, Dice
of each precision's labels against the reference, and Dice of its labels against the first precision's
(agreement); with --no-refine too (the coarse labels the precision changes directly).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/precision_agreement.py --precision float32,int8 --json OUT

Each precision (core/precision.py, NAPARI_FEWSHOT_MATMUL) runs in this one process, one after the other, with its
own segmenter; CPU seconds are the process's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="float32,int8")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import numpy as np

    from napari_fewshot.core import RefineParams, SegmentationParams, dice
    from napari_fewshot.core.precision import ENV, matmul_dtype
    from napari_fewshot.demo import run_demo

    out = {"load_average_1min_start": round(os.getloadavg()[0], 2), "runs": {}}
    labels = {}
    for refine in (False, True):
        for name in args.precision.split(","):
            os.environ[ENV] = name
            params = SegmentationParams(refine=RefineParams(enabled=None if refine else False))  # None: the default
            wall, cpu = time.perf_counter(), time.process_time()
            with tempfile.TemporaryDirectory() as tmp:
                demo = run_demo(tmp, params, log=lambda *_: None)
            key = f"{name}{'' if refine else ', no refine'}"
            labels[key] = demo["result"].labels
            first = f"{args.precision.split(',')[0]}{'' if refine else ', no refine'}"
            names = demo["names"]
            scored = np.setdiff1d(np.arange(len(demo["labels"])), demo["support_slices"])
            row = {"matmul": str(matmul_dtype("cpu")).replace("torch.", ""),
                   "dice": {names[c]: round(float(v), 4) for c, v in zip(names, demo["dice"].values())},
                   "agreement_with_" + first: {names[c]: round(float(dice(labels[key][scored] == c,
                                                                             labels[first][scored] == c)), 4)
                                                for c in names},
                   "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
                   "load_average_1min": round(os.getloadavg()[0], 2)}
            row["mean_dice"] = round(float(np.mean(list(row["dice"].values()))), 4)
            out["runs"][key] = row
            print(key, json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
