"""Best-of rules over busi_hits_levers.py --json output: for each set of levers, the episode draws whichever of the
winner and those levers has the highest selection_score; mean Dice, change against today, better / worse, Dice on hits.

    python benchmarks/busi_hits_bestof.py levers_s2.json levers_s3.json
"""
import json, sys, itertools
import numpy as np
rows_by = {}
for f in sys.argv[1:]:
    rep = json.load(open(f))
    for k, rows in rep.items():
        rows_by[k] = rows
sets = [["rebox 0.1"], ["rebox 0.05"], ["rebox 0.2"], ["rebox 0.1 + mask"], ["mask"],
        ["rebox 0.1", "rebox 0.1 + mask"], ["rebox 0.05", "rebox 0.1", "rebox 0.2"],
        ["rebox 0.1", "rebox 0.1 x2"], ["rebox 0.05", "rebox 0.2"], ["rebox 0.1", "rebox 0.2"],
        ["rebox 0.1", "mask"], ["rebox 0.1", "rebox 0.1 + mask", "mask"],
        ["rebox 0.05", "rebox 0.1", "rebox 0.2", "rebox 0.1 + mask"],
        ["core 0.9"], ["core 0.97"], ["rebox 0.05", "rebox 0.2", "core 0.9"], ["rebox 0.05", "rebox 0.2", "core 0.97"]]
for S in sets:
    line = []
    for k, rows in rows_by.items():
        if any(n not in rows[0] for n in S):
            continue
        base = np.array([r["today"][0] for r in rows])
        d = []
        for r in rows:
            best = max(["today"] + S, key=lambda n: r[n][3])
            d.append(r[best][0])
        d = np.array(d)
        hits = np.array([r["hit"] for r in rows])
        line.append(f"{k[-2:]}: {d.mean():.4f} ({d.mean() - base.mean():+.4f}, {(d > base + .01).sum()}/"
                    f"{(d < base - .01).sum()}, hits {d[hits].mean():.3f})")
    print(f"{' | '.join(S):55s}", "  ".join(line))
