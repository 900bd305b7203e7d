"""The BUSI box loop with Check next's standout sign (issue 20 item 3; session 25) beside the runs without it, eight
seeds: drags to mean Dice 0.85 over the 20 images (noc_85), mean Dice after the 3 first boxes and after all 13.

    python benchmarks/box_loop_standout.py

"with" runs: `benchmarks/results/s25_lead/loop_standout_sS.json`, each made on this session's tree by
`OMP_NUM_THREADS=1 napari-fewshot evaluate busi ../shared/data/busi --protocol interactive --correct box --images 20
--shots 3 --rounds 10 --seed S --feature-grid native --json OUT` (uncertainty.STANDOUT_WEIGHT 0.2, STANDOUT_GOOD 0.3).
"without": seeds 0-3 `s25_lead/loop_nostandout_sS.json`, the same command run on the same tree with
uncertainty.STANDOUT_WEIGHT set to 0 (`python -c "...; uncertainty.STANDOUT_WEIGHT = 0.0; cli.main(argv)"`), seeds 4-7
session 24's native-grid runs (`s24_lead/loop_native_sS.json`, main before this change). All sixteen ran on the
2-core AMD EPYC kind (AVX2, float32 matching). A run that never reaches 0.85 counts as 14 drags. ⚠ LiteMedSAM inside:
MedSAM's training data included public breast-ultrasound sets (possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

from box_loop_grids import RESULTS, print_table, run_of, summary


def accepting() -> None:
    """The same loops with the simulated clinician accepting (Shift+A) a proposed image already at Dice 0.85
    (`... --accept-above 0.85`, `s25_lead/loop_accept_sS.json`): drags to 0.85 and the images accepted by then."""
    import json

    cells = []
    for s in range(8):
        path = RESULTS / "s25_lead" / f"loop_accept_s{s}.json"
        if not path.is_file():  # seeds 3 and 7 were stopped unfinished (session 25: CPU for the CI run)
            continue
        report = json.loads(path.read_text())
        accepted = sum(p["accepted"] for p in report["picked"])
        cells.append(f"seed {s}: {'never' if report['noc_85'] is None else report['noc_85']}"
                     f" (+{report['accepts'] or 0} accepted; {accepted} in all)")
    print("accepting right images: " + " / ".join(cells))


def main() -> None:
    without = [RESULTS / "s25_lead" / f"loop_nostandout_s{s}.json" for s in range(4)] + [run_of("native", s)
                                                                                          for s in range(4, 8)]
    print_table({"without": [summary(path) for path in without],
                 "with the standout sign": [summary(RESULTS / "s25_lead" / f"loop_standout_s{s}.json")
                                            for s in range(8)]})
    accepting()


if __name__ == "__main__":
    main()
