"""The BUSI box loop on both feature grids over eight seeds (issue 20 item 3; session 24): drags to mean Dice 0.85
over the 20 images (noc_85), mean Dice after the 3 first boxes and after all 13, per seed and on average.

    python benchmarks/box_loop_grids.py

Seeds 0-3 come from the stored runs (native: session 21's `s21_flips/keepm03_sS_loop.json`, main's default since;
centred: session 23's `s23_lead/`), seeds 4-7 from session 24's `s24_lead/loop_GRID_sS.json`, each made by
`OMP_NUM_THREADS=1 napari-fewshot evaluate busi ../shared/data/busi --protocol interactive --correct box --images 20
--shots 3 --rounds 10 --seed S --feature-grid GRID --json OUT`. A run that never reaches 0.85 counts as 14 drags in
the mean (one more than it made). ⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets
(possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = 14


def run_of(grid: str, seed: int) -> Path:
    if seed >= 4:
        return RESULTS / "s24_lead" / f"loop_{grid}_s{seed}.json"
    if grid == "native":
        return RESULTS / "s21_flips" / f"keepm03_s{seed}_loop.json"
    return RESULTS / "s23_lead" / ("box_loop_seed3.json" if seed == 3 else f"loop_flips_seed{seed}_loop.json")


def summary(path: Path) -> tuple[int | None, float, float]:
    """(noc_85, mean Dice after the 3 first boxes, after the last) of one run."""
    report = json.loads(path.read_text())
    report = report.get("loop", report)
    dice = list(report["dice_per_drag"].values())
    return report["noc_85"], dice[0], dice[-1]


def main() -> None:
    print_table({grid: [summary(run_of(grid, s)) for s in range(8)] for grid in ("native", "centred")})


def print_table(arms: dict[str, list[tuple[int | None, float, float]]]) -> None:
    """Arm name -> its summary per seed 0-7 -> a markdown table, one column per arm, and the means."""
    print(f"| seed | {' | '.join(f'{arm}: noc_85 / after 3 / after 13' for arm in arms)} |")
    print(f"|---|{'---|' * len(arms)}")
    for s in range(8):
        cells = [f"{'never' if n is None else n} / {a:.3f} / {b:.3f}"
                 for n, a, b in (rows[s] for rows in arms.values())]
        print(f"| {s} | {' | '.join(cells)} |")
    print(f"| mean | {' | '.join(mean_cell(rows) for rows in arms.values())} |")


def mean_cell(rows: list[tuple[int | None, float, float]]) -> str:
    """One arm's summaries over the seeds -> "mean noc_85 (seeds over 10) / mean after 3 / mean after 13"."""
    nocs = [NEVER if n is None else n for n, _, _ in rows]
    return (f"{sum(nocs) / len(nocs):.2f} ({sum(n > 10 for n in nocs)} seeds over 10) / "
            f"{sum(r[1] for r in rows) / len(rows):.3f} / {sum(r[2] for r in rows) / len(rows):.3f}")


if __name__ == "__main__":
    main()
