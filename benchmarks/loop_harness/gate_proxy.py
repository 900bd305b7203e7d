"""The support gate on the prototype step alone (no LiteMedSAM after it), on the supports of recorded loops:
gate_proxy.py SEED rec.pkl. For each recorded round (its boxed images = the support, boxes' masks), the
coarse labels of the images not boxed, ungated (as recorded) and gated (core/support_gate.py defaults):
mean Dice of the not-boxed images at each drag, and how they changed after each new box."""
import sys, time, pickle, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from h import *
import torch
from napari_fewshot.core import predict
from napari_fewshot.core.support_gate import gate_support, gated_groups

from napari_fewshot.core.support_gate import GateParams
seed = int(sys.argv[1])
env = Env(seed)
if sys.argv[2] == "order":  # draw order: the first n boxed, n = 3..13 (draws not tuned on)
    rec = [{"boxed": list(range(n)), "dice": {}} for n in range(3, 14)]
else:
    rec = pickle.load(open(sys.argv[2], "rb"))
VARIANTS = {"greedy": GateParams(), "one": GateParams(max_gates=1), "one_min4": GateParams(max_gates=1, min_supports=4),
            "gain03": GateParams(min_gain=0.03), "one_gain03": GateParams(max_gates=1, min_gain=0.03)}
seg = env.seg
def coarse_dice(coarse, j):
    lab, _ = predict.labels_from_scores(torch.from_numpy(coarse), env.stack.shape_of(j))
    return dice(lab == 1, env.masks[j])
rows = []
for r in rec:
    boxed = r["boxed"]
    t = time.time()
    support = [env.boxmask[j].astype(np.uint8) if j in boxed else np.zeros(env.masks[j].shape, np.uint8)
               for j in range(env.n)]
    ss = env._orig_parse(support, [j for j in boxed if not support[j].any()])
    free = [j for j in range(env.n) if j not in boxed]
    plain = run(seg._coarse_similarity(env._orig_groups(ss), free))
    row = {"drags": len(boxed), "plain": float(np.mean([coarse_dice(plain[j], j) for j in free]))}
    for name, params in VARIANTS.items():
        gated, steps = gate_support(seg, ss, params)
        gcoarse = run(seg._coarse_similarity(gated_groups(seg, ss, gated), free)) if gated else plain
        row[name] = float(np.mean([coarse_dice(gcoarse[j], j) for j in free]))
        row[name + "_gated"] = sorted(gated)
    rows.append(row)
    print(f"s{seed} drags {len(boxed)} plain {row['plain']:.3f} " + " ".join(
        f"{k} {row[k]:+.3f}{row[k + '_gated']}".replace("+", "") for k in VARIANTS), f"{time.time()-t:.0f}s", flush=True)
print("MEAN gain over rounds:", {k: round(float(np.mean([r[k] - r["plain"] for r in rows])), 4) for k in VARIANTS},
      "rounds better/worse:", {k: (sum(r[k] > r["plain"] + 1e-9 for r in rows), sum(r[k] < r["plain"] - 1e-9 for r in rows))
                               for k in VARIANTS}, flush=True)
json.dump(rows, open(f"/tmp/loop/proxy_s{seed}_{sys.argv[2].split('/')[-1]}.json", "w"))
