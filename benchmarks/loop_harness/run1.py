"""Helper loop's harness for BENCHMARKS "The correction loop, session 8" (issue 20 item 3). Writes under /tmp/loop
(mkdir it first); features and LiteMedSAM embeddings cached in /tmp/loop-cache. Run from the repo root with
PYTHONPATH=$PWD OMP_NUM_THREADS=1: run1.py SEED RULE:PICK[,..] (loops: rules none/band8/core8/..., picks
worst/suggested/order), run2.py SEEDS ROUNDS (held-out ranking rows), feat.py SEED rec_*.pkl, ana.py feat_*.pkl."""
import sys, time, json, pickle
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from h import *
seed = int(sys.argv[1]); variants = sys.argv[2].split(",")
t = time.time()
env = Env(seed)
print("setup", time.time() - t, "box dice", np.round(env.boxdice, 3), flush=True)
out = {}
for v in variants:
    rule, pick = v.split(":")[:2]
    rec = []
    use_ref = rule == "ref"
    c, u = loop(env, "none" if use_ref else rule, pick, use_ref=use_ref, record=rec)
    out[v] = {"curve": c, "unboxed": u}
    pickle.dump(rec, open(f"/tmp/loop/rec_s{seed}_{rule}_{pick}.pkl", "wb"))
    json.dump(out, open(f"/tmp/loop/res_s{seed}_{sys.argv[3] if len(sys.argv)>3 else 'a'}.json", "w"), indent=1)
