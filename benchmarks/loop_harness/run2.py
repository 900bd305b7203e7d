import sys, time, pickle
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from h import *
from feat import features
for seed in map(int, sys.argv[1].split(",")):
    env = Env(seed)
    rec = []
    loop(env, "none", "order", rounds=int(sys.argv[2]), record=rec)
    rows = []
    for r in rec:
        rows += features(env, r)
    pickle.dump(rows, open(f"/tmp/loop/feat_s{seed}.pkl", "wb"))
    print("done", seed, len(rows), flush=True)
