"""The demo's refined and coarse runs of two source trees, interleaved, as a user runs them (one process each):


    python benchmarks/demo_ab.py --tree main=/work/main --tree new=. [--repeats 1] [--out FILE]

For each repeat and tree in turn: `napari-fewshot demo --headless --no-refine` and `napari-fewshot demo --headless`
(PYTHONPATH = the tree), each in a child process; its CPU seconds (user + system, from getrusage of the child),
wall seconds and peak RSS, and the mean Dice the demo prints. The ratio refined / coarse CPU time is issue 21's
"time until every slice is refined <= 3x the coarse time". Set OMP_NUM_THREADS for the children as you run it;
the load average is in the report (compare trees only within one run). ⚠ LiteMedSAM: MedSAM's training data
included public abdominal CT sets; the refined Dice may be optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(tree: str, refine: bool) -> dict:
    """One demo run of `tree`: {"cpu_s", "wall_s", "peak_rss_mib", "dice"}."""
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "napari_fewshot.cli", "demo", "--headless", "--out", out]
        args += [] if refine else ["--no-refine"]
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tree)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time and peak RSS
            wall = time.perf_counter() - started
            log.seek(0)
            text = log.read()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{tree} demo failed: {text[-2000:]}")
    found = re.search(r"mean Dice ([0-9.]+)", text)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(wall, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "dice": float(found.group(1)) if found else None,
            "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    runs: dict[str, list] = {f"{name} {kind}": [] for name in trees for kind in ("coarse", "refined")}
    report = {"omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_before": os.getloadavg(), "runs": runs}
    for _ in range(args.repeats):
        for kind in ("coarse", "refined"):
            for name, tree in trees.items():
                runs[f"{name} {kind}"].append(run_demo(tree, kind == "refined"))
                print(f"{name} {kind}: {runs[f'{name} {kind}'][-1]}", flush=True)
    for name in trees:
        coarse = min(r["cpu_s"] for r in runs[f"{name} coarse"])
        refined = min(r["cpu_s"] for r in runs[f"{name} refined"])
        report[f"{name} refined/coarse cpu"] = round(refined / coarse, 2)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
