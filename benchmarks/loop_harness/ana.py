import sys, pickle, numpy as np
from scipy.stats import spearmanr
from collections import defaultdict
rows = []
for p in sys.argv[1:]:
    rows += pickle.load(open(p, "rb"))
def sz(r, near=np.log(4), far=np.log(16)):
    return float(np.clip((r["size_rel"] - near) / (far - near), 0, 1))
def comb(*es):
    return 1 - np.prod([1 - e for e in es])
OLD = lambda r: r.get("unc_old", r["unc"])
S = {
 "OLD": OLD,
 "NEW": lambda r: 1.0 if r["area"] == 0 else comb(OLD(r), min(1, 4*(1 - r["stab"]))),
 "unc": lambda r: r["unc"],
 "1-agree": lambda r: 1 - r["agree"],
 "1-q": lambda r: 1 - r["q"],
 "1-stab": lambda r: 1 - r["stab"],
 "1-redecode": lambda r: 1 - r["redecode"],
 "1-pmean": lambda r: 1 - r["pmean"],
 "ncomp": lambda r: r["ncomp"],
 "size": lambda r: r["size_rel"],
 "area": lambda r: r["area"],
 "-contrast": lambda r: -r["contrast"],
 "unc+agree": lambda r: comb(r["unc"], 1 - r["agree"]),
 "agree+stab": lambda r: comb(1 - r["agree"], 1 - r["stab"]),
 "agree+size": lambda r: comb(1 - r["agree"], sz(r)),
 "agree+q": lambda r: comb(1 - r["agree"], 1 - r["q"]),
 "agree+stab+size": lambda r: comb(1 - r["agree"], 1 - r["stab"], sz(r)),
 "agree+stab+q": lambda r: comb(1 - r["agree"], 1 - r["stab"], 1-r["q"]),
 "unc+stab": lambda r: comb(r["unc"], 1 - r["stab"]),
 "unc+2stab": lambda r: comb(r["unc"], min(1, 2*(1 - r["stab"]))),
 "unc+stab+q": lambda r: comb(r["unc"], 1 - r["stab"], 1-r["q"]),
 "unc*stab": lambda r: 1 - (1-r["unc"]) * r["stab"],
 "unc+redec": lambda r: comb(r["unc"], 1 - r["redecode"]),
 "unc+stab+redec": lambda r: comb(r["unc"], 1 - r["stab"], 1 - r["redecode"]),
 "unc+3stab": lambda r: comb(r["unc"], min(1, 3*(1 - r["stab"]))),
 "unc+4stab": lambda r: comb(r["unc"], min(1, 4*(1 - r["stab"]))),
 "unc+2stab+q": lambda r: comb(r["unc"], min(1, 2*(1 - r["stab"])), 1-r["q"]),
 "unc+agree+stab": lambda r: comb(r["unc"], 1 - r["agree"], 1 - r["stab"]),
}
groups = defaultdict(list)
for r in rows:
    groups[(r["seed"], r["round"])].append(r)
print("score".ljust(18), " ".join(f"s{s}".rjust(12) for s in sorted({k[0] for k in groups})))
for name, f in S.items():
    per = defaultdict(list); hits = defaultdict(int)
    for (s, rd), g in groups.items():
        u = [f(r) for r in g]; e = [r["err"] for r in g]
        rho = spearmanr(u, e)[0]
        if not np.isnan(rho): per[s].append(rho)
        first = sorted(range(len(g)), key=lambda i: -u[i])[:3]; worst = sorted(range(len(g)), key=lambda i: -e[i])[:3]
        hits[s] += len(set(first) & set(worst))
        # first pick's err rank
    print(name.ljust(18), " ".join(f"{np.mean(per[s]):6.2f}/{hits[s]:2d}".rjust(12) for s in sorted(per)))
