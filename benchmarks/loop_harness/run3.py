"""Full loops to 20 drags for the session-9 tables: run3.py SEED VARIANT[,..] ROUNDS TAG. VARIANT is
GATE:PICK with GATE in none / loo (gate_supports) and PICK worst / suggested. Writes /tmp/loop/r3_*.json
(per drag: mean Dice of the 20, of the images not boxed, each free image's Dice and uncertainty)."""
import sys, time, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from h import *
seed, variants, rounds, tag = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
env = Env(seed)
print("box dice", np.round(env.boxdice, 3), "all boxed", np.mean(env.boxdice), flush=True)
out = {}
for v in variants:
    gate, pick = v.split(":")
    env.gate = gate
    rec = []
    c, u = loop(env, "none", pick, rounds=rounds, record=rec)
    out[v] = {"curve": c, "unboxed": u, "box_every_image": float(np.mean(env.boxdice)),
              "rounds": [{"boxed": r["boxed"], "dice": {str(k): v for k, v in r["dice"].items()},
                          "unc": {str(k): v for k, v in r["unc"].items()},
                          "unc_plain": {str(k): v for k, v in r.get("unc_plain", {}).items()}, "gated": r.get("gated")} for r in rec]}
    json.dump(out, open(f"/tmp/loop/r3_s{seed}_{tag}.json", "w"), indent=0)
