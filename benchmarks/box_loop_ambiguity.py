"""Check next's ambiguity sign (core/uncertainty.AMBIGUITY_WEIGHT) in the BUSI box loop over sixteen seeds, off
(the default, weight 0) against 0.1 (issue 20 item 3): drags to mean Dice 0.85 over the 20 images (noc_85) per seed,
and the mean Dice over the 20 after each drag, averaged over the seeds.

    python benchmarks/box_loop_ambiguity.py

Every run: `OMP_NUM_THREADS=1 napari-fewshot evaluate busi ../shared/data/busi --protocol interactive --correct box
--images 20 --shots 3 --rounds 10 --seed S --json OUT` with the encoder "auto" (lite0 + LiteMedSAM on images), on the
same 2-core AMD machine kind, the weight set in the process before the CLI ran (BENCHMARKS.md, session 28). Off:
sessions 26-27's `box_combo_sS.json` (seeds 0-7), session 29's `box_off_sS.json` (8-15); 0.1: session 28's
`box_ambiguity01_sS.json` (0-7), session 29's `box_ambig01_sS.json` (8-15). A run that never reaches 0.85 counts as
14 drags (one more than it made). ⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets
(possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

import json
from pathlib import Path

from box_loop_encoders import print_curves

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = 14
SEEDS = range(16)


def run_of(weight: str, seed: int) -> Path:
    if seed >= 8:
        return RESULTS / "s29_lead" / f"box_{'off' if weight == 'off' else 'ambig01'}_s{seed}.json"
    if weight == "0.1":
        return RESULTS / "s28_lead" / f"box_ambiguity01_s{seed}.json"
    return RESULTS / ("s26_lead" if seed in (1, 2, 3) else "s27_lead") / f"box_combo_s{seed}.json"


def summary(reports: list[dict]) -> tuple[float, int]:
    nocs = [r["noc_85"] for r in reports]
    return sum(NEVER if n is None else n for n in nocs) / len(nocs), sum(n is not None and n <= 10 for n in nocs)


def main() -> None:
    runs = {w: [json.loads(run_of(w, s).read_text()) for s in SEEDS] for w in ("off", "0.1")}
    print("seed    " + " ".join(f"{s:>5}" for s in SEEDS) + "   mean (never = 14), seeds within 10")
    for weight, reports in runs.items():
        nocs = [r["noc_85"] for r in reports]
        mean, within = summary(reports)
        print(f"{weight:<7} " + " ".join(f"{'never' if n is None else n:>5}" for n in nocs)
              + f"   {mean:.2f}, {within} of {len(nocs)}")
    for name, part in (("seeds 0-7", range(8)), ("seeds 8-15", range(8, 16))):
        print(name + ": " + ", ".join(f"{w} {summary([runs[w][s] for s in part])[0]:.2f} drags "
                                      f"({summary([runs[w][s] for s in part])[1]} of 8 within 10)" for w in runs))
    print_curves(runs, 7)


if __name__ == "__main__":
    main()
