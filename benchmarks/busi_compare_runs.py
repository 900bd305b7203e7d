"""Two `evaluate busi` JSONs of the same draw, episode by episode: mean Dice, hit rate, Dice on hits, the mean change
± its standard error, how many episodes are better / worse by more than 0.01 or unchanged (within 0.001), lesions
found / lost, and the three largest losses.

    python benchmarks/busi_compare_runs.py BEFORE.json AFTER.json
"""
import json, sys
import numpy as np
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
ca, cb = a["cases"], b["cases"]
assert [c["query"] for c in ca] == [c["query"] for c in cb]
d = np.array([y["dice"] - x["dice"] for x, y in zip(ca, cb)])
same = sum(abs(v) < 1e-3 for v in d)
found = sum(y["hit"] and not x["hit"] for x, y in zip(ca, cb))
lost = sum(x["hit"] and not y["hit"] for x, y in zip(ca, cb))
print(f"base {a['dice_mean']:.4f} (hit {a['hit_rate']:.2f}, on hits {a['dice_on_hits']:.3f})  "
      f"new {b['dice_mean']:.4f} (hit {b['hit_rate']:.2f}, on hits {b['dice_on_hits']:.3f})  "
      f"delta {b['dice_mean'] - a['dice_mean']:+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} (SE)  "
      f"better/worse>0.01 {(d > 0.01).sum()}/{(d < -0.01).sum()}  unchanged {same}  hits found/lost {found}/{lost}")
for v, x in sorted(zip(d, ca), key=lambda t: t[0])[:3]:
    print(f"   worst {x['query']} {v:+.3f}")
