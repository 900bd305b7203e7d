"""BUSI: which growing boxes to try after refit, from busi_hits_levers.py --bank JSONs (one round, each box scored).

    python benchmarks/busi_grow_bank.py BANK.json [BANK.json ...]

For each set of box names (and "top side": the side of the given growth whose added strip has the highest mean
class margin), each episode keeps today's outline unless the best-scoring box of the set scores higher by more
than delta; prints the mean Dice change per dump folder and the episodes better / worse by > 0.01.
"""
import json
import sys

import numpy as np

SETS = {
    "m0.3": ["m0.3"], "m0.5": ["m0.5"], "m0.3+m0.5": ["m0.3", "m0.5"],
    "refit again": ["r0.05", "r0.2"], "core0.97": ["core0.97"], "core0.9": ["core0.9"],
    "sides0.3": ["L0.3", "T0.3", "R0.3", "B0.3"], "sides0.5": ["L0.5", "T0.5", "R0.5", "B0.5"],
    "top side 0.5": ["top1 0.5"], "top 2 sides 0.5": ["top2 0.5"], "top side 0.3": ["top1 0.3"],
    "core0.97 + top side 0.5": ["core0.97", "top1 0.5"], "core0.97 + m0.5": ["core0.97", "m0.5"],
    "core0.97 + sides0.5": ["core0.97", "L0.5", "T0.5", "R0.5", "B0.5"],
    "core0.97 + refit again": ["core0.97", "r0.05", "r0.2"],
    "core0.97 + top 2 sides 0.5": ["core0.97", "top2 0.5"],
    "core0.97 + core0.9": ["core0.97", "core0.9"],
}


def options(row, names):
    """(Dice, score) of each box the set names, in this episode."""
    out = []
    for name in names:
        if name.startswith("top"):
            k, g = int(name[3]), name.split()[1]
            sides = [s + g for s in "LTRB" if s + g in row]
            for s in sorted(sides, key=lambda s: -row[f"strip {s}"][0])[:k]:
                out.append(row[s])
        elif name in row:
            out.append(row[name])
    return out


def main() -> None:
    for path in sys.argv[1:]:
        for folder, rows in json.load(open(path)).items():
            base = np.array([r["today"][0] for r in rows])
            print(f"\n{folder}: today {base.mean():.4f} ({len(rows)} episodes)")
            for label, names in SETS.items():
                for delta in (0.0, 0.01, 0.02):
                    d = []
                    for r in rows:
                        best = max(options(r, names), key=lambda t: t[1], default=None)
                        d.append(best[0] if best is not None and best[1] > r["today"][1] + delta else r["today"][0])
                    d = np.array(d)
                    print(f"  {label:28s} delta {delta:.2f}: {d.mean() - base.mean():+.4f}  better/worse "
                          f"{(d > base + 0.01).sum():2d}/{(d < base - 0.01).sum():2d}")


if __name__ == "__main__":
    main()
