"""Ranking features per (record, free image)."""
import sys, pickle, random
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr
import napari_fewshot.core.uncertainty as U
from napari_fewshot.core.sam_prompt import box_of, PlaneEmbedding

def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u

def features(env, rec, scale=20.0):
    out = []
    sizes = U.support_sizes([env.boxmask[j] for j in rec["boxed"]])
    prom = env.seg.sam.prompter
    for j, lab in rec["labels"].items():
        sc = rec["coarse"][j]
        f = {"seed": rec["seed"], "round": len(rec["boxed"]), "j": j, "err": 1 - rec["dice"][j], "unc": rec["unc"][j]}
        area = lab.sum() / lab.size
        f["area"] = area
        f["unc_old"] = U.image_error(sc, lab.astype(np.uint8), sizes, env.params.scale)
        grid = sc.shape[1:]
        cfg = sc.argmax(0) != 0
        ffg = U.cell_labels(lab.astype(np.uint8), grid) != 0
        f["agree"] = iou(cfg, ffg)
        ncomp = ndimage.label(cfg)[1]
        f["ncomp"] = ncomp
        f["cfrac"] = cfg.mean()
        ev = sc[1:].max(0) - sc[0]
        f["evmax"] = float(ev.max())
        f["ev_in"] = float(ev[ffg].mean()) if ffg.any() else -1
        c = U.foreground_contrast(sc, lab.astype(np.uint8))
        f["contrast"] = -9 if c is None else c
        f["size_rel"] = abs(np.log(area / np.median(sizes))) if area > 0 and len(sizes) else 9
        if area > 0:
            emb = env.seg.sam.embedding_of(env.stack, j)
            emb = PlaneEmbedding(emb.features.float(), emb.shape, emb.scale)
            box = box_of(lab, 0.1)
            rng = np.random.default_rng(j)
            w, h = box[2] - box[0], box[3] - box[1]
            boxes = [box] + [box + rng.uniform(-0.1, 0.1, 4) * np.array([w, h, w, h]) for _ in range(6)]
            probs, q = prom.decode_with_quality(emb, np.stack(boxes).astype(np.float32))
            ms = probs > 0.5
            f["q"] = float(q[0])
            f["stab"] = float(np.mean([iou(ms[0], m) for m in ms[1:]]))
            f["redecode"] = float(iou(ms[0], lab))
            f["pmean"] = float(probs[0][lab].mean())
        else:
            f.update(q=0, stab=0, redecode=0, pmean=0)
        out.append(f)
    return out

if __name__ == "__main__":
    from h import Env
    seed = int(sys.argv[1]); files = sys.argv[2:]
    env = Env(seed)
    rows = []
    for path in files:
        for rec in pickle.load(open(path, "rb")):
            rows += features(env, rec)
    pickle.dump(rows, open(f"/tmp/loop/feat_s{seed}.pkl", "wb"))
    print(len(rows))
