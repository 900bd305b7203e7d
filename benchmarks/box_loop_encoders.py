"""The BUSI box loop with EfficientNet-Lite0 against lite0 + LiteMedSAM (the encoder "auto" gives image sets since
session 27) over eight seeds (issue 20 items 2-3): drags to mean Dice 0.85 over the 20 images (noc_85) per seed, and
the mean Dice over the 20 after each drag, averaged over the seeds, side by side.

    python benchmarks/box_loop_encoders.py

lite0: session 25's `s25_lead/loop_standout_sS.json` (main's default then); combined: session 26's
`s26_lead/box_combo_sS.json` (seeds 1-3) and session 27's `s27_lead/box_combo_sS.json` (0, 4-7), each made on the same
2-core AMD machine kind by `OMP_NUM_THREADS=1 napari-fewshot evaluate busi ../shared/data/busi --protocol interactive
--correct box --images 20 --shots 3 --rounds 10 --seed S [--encoder efficientnet-lite0+litemedsam] --json OUT`. A run
that never reaches 0.85 counts as 14 drags in the mean (one more than it made). ⚠ LiteMedSAM inside: MedSAM's training
data included public breast-ultrasound sets (possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = 14
SEEDS = range(8)


def run_of(encoder: str, seed: int) -> Path:
    if encoder == "lite0":
        return RESULTS / "s25_lead" / f"loop_standout_s{seed}.json"
    return RESULTS / ("s26_lead" if seed in (1, 2, 3) else "s27_lead") / f"box_combo_s{seed}.json"


def main() -> None:
    runs = {e: [json.loads(run_of(e, s).read_text()) for s in SEEDS] for e in ("lite0", "combined")}
    print("seed  " + "  ".join(f"{s:>5}" for s in SEEDS) + "   mean (never = 14)")
    for encoder, reports in runs.items():
        nocs = [r["noc_85"] for r in reports]
        mean = sum(NEVER if n is None else n for n in nocs) / len(nocs)
        print(f"{encoder:<9}" + "  ".join(f"{'never' if n is None else n:>5}" for n in nocs) + f"   {mean:.2f}")
    print_curves(runs, 9)


def print_curves(runs: dict[str, list[dict]], width: int) -> None:
    """The mean Dice over the 20 images after each drag, averaged over the seeds, for the two variants in `runs`
    (name -> one report per seed), and the second's change over the first; names padded to `width`."""
    print("\nmean Dice over the 20 images after each drag, averaged over the seeds")
    first, second = runs
    drags = list(runs[first][0]["dice_per_drag"])
    print(f"{'drag':<{width}} " + " ".join(f"{d:>6}" for d in drags))
    means = {name: [sum(r["dice_per_drag"][d] for r in reports) / len(reports) for d in drags]
             for name, reports in runs.items()}
    for name, values in means.items():
        print(f"{name:<{width}} " + " ".join(f"{v:6.3f}" for v in values))
    print(f"{'change':<{width}} " + " ".join(f"{b - a:+6.3f}" for a, b in zip(means[first], means[second])))


if __name__ == "__main__":
    main()
