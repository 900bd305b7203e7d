"""Fine-tune "calibrate" on volumes (issue 24): the interactive protocol and within-K, with and without it.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calibrate_volumes.py DIR OUT.json [--no-refine]
        [--variants none,shrink2,shrink0] [--rounds 5] [--within 3]

Each variant runs `evaluate_volumes_interactive` (suggested picks, 1 painted slice per organ) with
FineTuneParams(method="calibrate", calibrate_shrink=...) as `--fine-tune calibrate` does (reset, calibrate on every
signed slice, segment, each round); "none" without Fine-tune. With --within K, also the within-K protocol.
Prints the Dice of the not-yet-corrected slices after 0..rounds corrections, NoC@0.90 and the seconds.
"""

from __future__ import annotations

import argparse
import json
import time

from napari_fewshot.core import FineTuneParams, SegmentationParams
from napari_fewshot.core.config import RefineParams
from napari_fewshot.evaluation import interactive
from napari_fewshot.evaluation.interactive import evaluate_volumes_interactive

_original = interactive._fine_tuned


def _logged(segmenter, support, fine_tune, empty):
    """The protocol's Fine-tune, with what it chose printed (interactive._fine_tuned)."""
    _original(segmenter, support, fine_tune, empty)
    if fine_tune is not None:
        print("   ", segmenter.adaptation.summary, flush=True)


interactive._fine_tuned = _logged

VARIANTS = {"none": None, "shrink2": dict(calibrate_shrink=2.0), "shrink0": dict(calibrate_shrink=0.0),
            "shrink1": dict(calibrate_shrink=1.0), "mean0": dict(calibrate_shrink=0.0, calibrate_objective="mean"),
            "mean2": dict(calibrate_shrink=2.0, calibrate_objective="mean")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--variants", default="none,shrink2,shrink0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--within", type=int, default=0)
    args = ap.parse_args()
    params = SegmentationParams(refine=RefineParams(enabled=False)) if args.no_refine else SegmentationParams()
    report = {}
    for name in args.variants.split(","):
        tune = None if VARIANTS[name] is None else FineTuneParams(method="calibrate", **VARIANTS[name])
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = evaluate_volumes_interactive(args.folder, rounds=args.rounds, pick="suggested", initial_slices=1,
                                           params=params, fine_tune=tune, log=print)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        report[f"interactive/{name}"] = out
        lift = out["dice_per_round_uncorrected"]
        print(f"== interactive {name}: not yet corrected " + " ".join(f"{v:.3f}" for v in lift)
              + f"; whole {' '.join(f'{v:.3f}' for v in out['dice_per_round'])}; NoC {out['noc_90']} "
              f"per case {out['noc_90_mean']:.2f}; wall {wall:.0f} s cpu {cpu:.0f} s", flush=True)
        if args.within:
            from napari_fewshot.evaluation.volumes import evaluate_volumes

            t0 = time.perf_counter()
            out = evaluate_volumes(args.folder, protocol="within", support_slices=args.within, params=params,
                                   fine_tune=tune)
            report[f"within{args.within}/{name}"] = out
            print(f"== within-{args.within} {name}: {out.get('dice_mean')} {out.get('dice_per_class')} "
                  f"wall {time.perf_counter() - t0:.0f} s", flush=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
