"""Per first segmentation of the box loop: how each candidate sign orders the images not boxed (Spearman with
1 - Dice, the Dice of the image it would propose first, the places of the misses, Dice < 0.05).

    python benchmarks/results/s15_loop2/rank_signs_report.py FILE.json ...   (rank_signs_once.py output)"""
import json
import sys

import numpy as np
from scipy.stats import spearmanr

SIGNS = {
    "current (Check next today)": lambda r: r["error"],
    "unlike: -likeness with the boxed lesions (fg_mean)": lambda r: -r.get("fg_mean", -1),
    "-nearest boxed lesion (fg_max)": lambda r: -r.get("fg_max", -1),
    "likeness with the boxed lesions' rings (bg_mean)": lambda r: r.get("bg_mean", 1),
    "bg_mean - fg_mean": lambda r: r.get("bg_mean", 1) - r.get("fg_mean", -1),
    "own_ring (1 - selection contrast)": lambda r: r.get("own_ring", 1),
    "-selection margin (ambiguous choice)": lambda r: -(r["margin"] if r.get("margin") is not None else 1.0),
    "1 - quality": lambda r: 1 - (r["quality"] if r.get("quality") is not None else 0),
}
for path in sys.argv[1:]:
    d = json.load(open(path))
    rows = d["rows"]
    err = np.array([1 - r["dice"] for r in rows])
    print(f"== {path}: seed {d.get('seed')}, {len(rows)} images, misses {int((err > 0.95).sum())}, mean Dice {1 - err.mean():.3f}")
    for r in sorted(rows, key=lambda r: r["dice"]):
        f = lambda k: "-" if r.get(k) is None else f"{r[k]:.2f}"  # noqa: E731
        print(f"  {r['name'][:26]:26s} Dice {r['dice']:.2f} err {f('error')} q {f('quality')} stab {f('stability')} "
              f"con {f('contrast')} fg {f('fg_mean')} bg {f('bg_mean')} own {f('own_ring')} margin {f('margin')}")
    for name, sign in SIGNS.items():
        s = np.array([sign(r) for r in rows], float)
        if "margin" in name and all(r.get("margin") is None for r in rows):
            continue
        order = np.argsort(-s, kind="stable")
        places = [int(np.where(order == k)[0][0]) + 1 for k in range(len(rows)) if err[k] > 0.95]
        print(f"  {name:52s} rho {spearmanr(s, err)[0]:+.2f}  first: Dice {1 - err[order[0]]:.2f}  misses at {places}")
