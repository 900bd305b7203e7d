"""The BUSI box loop with Check next's estimated error of every unboxed image recorded each round (issue 20 item 3;
session 24): which images the estimate hides.

    OMP_NUM_THREADS=1 python benchmarks/loop_check_next_dump.py SEED GRID OUT.json   # GRID: native | centred
    python benchmarks/loop_check_next_dump.py --report OUT.json [ROUNDS]

The loop is `evaluation.interactive_images.evaluate_busi_boxes` with the CLI's defaults (what `evaluate busi
--protocol interactive --correct box --images 20 --shots 3 --rounds 10 --seed SEED --feature-grid GRID` runs);
`pick_suggested` is wrapped, read-only, to keep `result.uncertainty` per round. --report prints, per round, every
unboxed image's estimate beside its Dice. ⚠ LiteMedSAM inside: MedSAM's training data included public
breast-ultrasound sets (possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"


def run(seed: int, grid: str, out: Path) -> None:
    from napari_fewshot.core import SegmentationParams
    from napari_fewshot.evaluation import interactive_images as loop

    rounds, real = [], loop.pick_suggested

    def pick(result, free, boxed):
        rounds.append({"uncertainty": {int(k): float(v) for k, v in result.uncertainty.items()}, "free": list(free)})
        return real(result, free, boxed)

    loop.pick_suggested = pick
    params = SegmentationParams(seed=seed, feature_grid=grid)
    report = loop.evaluate_busi_boxes(DATA, rounds=10, seed=seed, params=params)
    out.write_text(json.dumps({"report": report, "rounds": rounds}))
    print(f"noc_85 {report['noc_85']}")


def report(path: Path, shown: int) -> None:
    data = json.loads(path.read_text())
    names = data["report"]["config"]["images_drawn"]
    dice = list(data["report"]["dice_per_image"].values())
    for r, state in enumerate(data["rounds"][:shown]):
        print(f"round {r}: estimated error / Dice, most suspect first")
        for j in sorted(state["free"], key=lambda j: -state["uncertainty"][str(j)]):
            print(f"  {names[j]:28s} {state['uncertainty'][str(j)]:.3f} / {dice[r][names[j]]:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    else:
        run(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
