"""The CHAOS interactive protocol (`evaluate volumes DIR --protocol interactive`) with LiteMedSAM's box reuse
exact (A) and with a tolerance (B), case by case in one process, to see what approximate reuse costs in Dice.

    python benchmarks/interactive_reuse_ab.py DIR --cases 2,8 [--rounds 3] [--support-slices 1]
        [--variant reuse_shift=2] [--classes 1:liver,2:kidney_right,3:kidney_left,4:spleen] [--json OUT]

DIR holds CHAOS's image_N / label_N files; each case is run through evaluation.interactive's protocol (the
tool's suggested slices, refinement on) once with RefineParams() and once with the variant (RefineParams
fields, `;`-separated), alternating which goes first. Prints Dice per round per case and class, and wall / CPU
seconds of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core import RefineParams, SegmentationParams  # noqa: E402
from napari_fewshot.evaluation.interactive import evaluate_volumes_interactive  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--cases", required=True, help="comma-separated case numbers, e.g. 2,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--support-slices", type=int, default=1)
    parser.add_argument("--variant", default="reuse_shift=2")
    parser.add_argument("--classes", default="1:liver,2:kidney_right,3:kidney_left,4:spleen")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    classes = {int(k): v for k, v in (c.split(":") for c in args.classes.split(","))}
    fields = {k: float(v) for k, v in (f.split("=") for f in args.variant.split(";"))}
    variants = {"A exact": RefineParams(enabled=True), f"B {args.variant}": RefineParams(enabled=True, **fields)}
    out = {"variant": args.variant, "rounds": args.rounds, "cases": {}}
    for n, case in enumerate(args.cases.split(",")):
        folder = Path(tempfile.mkdtemp(prefix="fewshot-interactive-"))
        for kind in ("image", "label"):
            (folder / f"{kind}_{case}.nii.gz").symlink_to(Path(args.dir).resolve() / f"{kind}_{case}.nii.gz")
        rows = {}
        for name in (list(variants) if n % 2 == 0 else list(variants)[::-1]):
            params = dataclasses.replace(SegmentationParams(), refine=variants[name])
            start, cpu = time.perf_counter(), time.process_time()
            report = evaluate_volumes_interactive(folder, rounds=args.rounds, pick="suggested",
                                                  initial_slices=args.support_slices, params=params, classes=classes)
            rows[name] = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
                          "tasks": {r["class"]: [round(d, 4) for d in r["dice_per_round"]] for r in report["cases"]},
                          "corrected": {r["class"]: r["corrected"] for r in report["cases"]},
                          "load": round(os.getloadavg()[0], 1)}
            print(case, name, json.dumps(rows[name]), flush=True)
        out["cases"][case] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
