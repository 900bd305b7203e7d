"""Tables for BENCHMARKS "The correction loop, session 9" from run3.py's /tmp/loop/r3_s*_*.json:
ana3.py FILE.json [...]. Per drag: mean Dice of the 20 and of the images not boxed; after each new box, how the
images still not boxed changed (mean, how many fell / rose by > 0.1); Check next's Spearman(uncertainty, 1 - Dice)
and where the misses (Dice < 0.05) stood in its order."""
import sys, json
import numpy as np
from scipy.stats import spearmanr

for path in sys.argv[1:]:
    for name, r in json.load(open(path)).items():
        print(f"== {path} {name}: every image boxed {r['box_every_image']:.3f}")
        rounds = r["rounds"]
        first = next((len(x["boxed"]) for x, c in zip(rounds, r["curve"]) if c >= 0.85), None)
        print("noc_85:", first)
        print("drags | " + " | ".join(str(len(x["boxed"])) for x in rounds))
        print("mean20 | " + " | ".join(f"{c:.3f}" for c in r["curve"]))
        print("unboxed | " + " | ".join(f"{c:.3f}" for c in r["unboxed"]))
        deltas, rhos, misses = [], [], []
        for a, b in zip(rounds, rounds[1:]):
            d = np.array([b["dice"][k] - a["dice"][k] for k in b["dice"]])
            deltas.append(f"{d.mean():+.3f} ({int((d < -0.1).sum())}v/{int((d > 0.1).sum())}^)")
        for x in rounds:
            keys = sorted(x["dice"], key=int)
            u = [x["unc"][k] for k in keys]; e = [1 - x["dice"][k] for k in keys]
            rho = spearmanr(u, e)[0] if len(keys) > 2 else np.nan
            rhos.append(rho)
            order = sorted(keys, key=lambda k: (-x["unc"][k], int(k)))
            misses.append([order.index(k) + 1 for k in keys if x["dice"][k] < 0.05])
        print("delta others after next box | " + " | ".join(deltas))
        print("spearman | " + " | ".join(f"{v:.2f}" for v in rhos), "mean", f"{np.nanmean(rhos):.2f}")
        print("miss ranks (of free) | " + " | ".join(",".join(map(str, m)) or "-" for m in misses))
        g = [x.get("gated") for x in rounds]
        if any(g):
            print("gated | " + " | ".join(",".join(map(str, x["gated"])) if x else "" for x in g))
