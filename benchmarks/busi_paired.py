"""Two `evaluate busi` JSONs of the same draw, episode by episode: the means, the mean change ± its standard error,
episodes better / worse by more than 0.01, lesions found / lost (session 22, helper "sample").

    python benchmarks/busi_paired.py BEFORE.json AFTER.json
"""
import json, sys, numpy as np
def load(p): return json.load(open(p))
a, b = load(sys.argv[1]), load(sys.argv[2])
ca, cb = a["cases"], b["cases"]
assert [c["query"] for c in ca] == [c["query"] for c in cb]
d = np.array([y["dice"] - x["dice"] for x, y in zip(ca, cb)])
found = sum((not x["hit"]) and y["hit"] for x, y in zip(ca, cb)); lost = sum(x["hit"] and not y["hit"] for x, y in zip(ca, cb))
print(f"{sys.argv[1].split('/')[-1]} -> {sys.argv[2].split('/')[-1]}: {a['dice_mean']:.3f} -> {b['dice_mean']:.3f} "
      f"mean change {d.mean():+.3f} ± {d.std(ddof=1)/np.sqrt(len(d)):.3f} (SE); >0.01 better/worse {(d>0.01).sum()}/{(d<-0.01).sum()}; hits found/lost {found}/{lost}")
