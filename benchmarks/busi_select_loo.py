"""Leave one out on the signed images, for the selection score (issue 20): per BUSI episode (busi_select_dump.py's
draws), the code's own candidates (select_objects.candidates, low-resolution bfloat16 decode, the coarse-cover
filter) with their features on the query, AND on each support image segmented with the OTHER supports as its
support (its coarse map from their prototypes, its profile from their lesions), so a score's weights can be
chosen on the supports, where the right candidate is known, and checked on the query.

    python benchmarks/busi_select_loo.py s0_k5_n50,s1_k5_n50 [FIRST_EPISODES] [MAX_LOO]   # dump
    python benchmarks/busi_select_loo.py --report s0_k5_n50,s1_k5_n50                      # rules

Per candidate: its mean embedding, embedding contrast, likeness to the (other) painted lesions, area share at
the decoder's resolution, size deviation from the (other) painted lesions (SupportProfile.size_deviation), share
of the coarse finding it covers, share of it inside the coarse finding, mean class margin inside, Dice at the
decoder's resolution. MAX_LOO: at most that many supports held out per episode (the first ones; 20-shot cost).
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busi_select_score import DATA, covering_candidates, decoder_of, image, query_of  # noqa: E402
from napari_fewshot.core.select_objects import embedding_contrast, embedding_mean, low_res  # noqa: E402
from napari_fewshot.evaluation.busi import localisation  # noqa: E402

OUT = Path("/tmp/loo")


def low_res_values(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float -> (h, w) area-resized."""
    import torch
    return torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(values, np.float32))[None, None],
                                           size=size, mode="area")[0, 0].numpy()


def rows_of(ep: dict, service) -> list[dict]:
    """The candidates of one (image, coarse map, supports) as feature rows."""
    q, truth, emb, coarse, margin, profile = query_of(ep)
    boxes, masks = covering_candidates(decoder_of(service, emb), emb, margin, coarse, profile)
    small = low_res(truth, emb.resized) > 0.5
    share = low_res(coarse, emb.resized)
    margin_low = low_res_values(margin, emb.resized)
    rows = []
    for m in masks:
        inside = embedding_mean(emb, m)
        rows.append(dict(vec=inside.numpy().astype(np.float32), contrast=embedding_contrast(emb, m, inside=inside),
                         likeness=profile.likeness(inside.numpy()), area=float(m.mean()),
                         size_dev=profile.size_deviation(float(m.mean())),
                         cover=float(share[m].sum() / max(share.sum(), 1e-9)), inside=float(share[m].mean()),
                         margin=float(margin_low[m].mean()), dice_low=localisation(m, small)["dice"]))
    return rows


def held_out_coarse(seg, s: int, others: list[int]) -> np.ndarray:
    """(K + 1, h, w) coarse similarity of support image s from the other supports' prototypes."""
    from napari_fewshot.core import run
    support = [np.zeros(seg.stack.shape_of(i), np.uint8) for i in range(len(seg.stack))]
    for i in others:
        support[i] = image(i)["mask"].astype(np.uint8)
    ss = seg.parse_support(support)
    return run(seg._coarse_similarity(seg._groups(ss), [s]))[s]


def dump(tags: list[str], first: int | None, max_loo: int) -> None:
    from napari_fewshot.core import FewShotSegmenter, SegmentationParams
    from napari_fewshot.core.config import RefineParams
    from napari_fewshot.evaluation.datasets import load_busi
    OUT.mkdir(exist_ok=True)
    _, images, _ = load_busi("../shared/data/busi")
    for tag in tags:
        seed = int(tag.split("_")[0][1:])
        seg = FewShotSegmenter(SegmentationParams(seed=seed, refine=RefineParams(enabled=False),
                                                  cache_dir="/tmp/busi_cache"))
        seg.set_image(images)
        service = seg.refiner.service
        out = OUT / f"loo_{tag}.pkl"
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        episodes = pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[:first]
        for ep in episodes[len(rows):]:
            started = time.process_time()
            loo = []
            for s in ep["supports"][:max_loo]:
                others = [i for i in ep["supports"] if i != s]
                loo.append(rows_of(dict(query=s, supports=others, coarse=held_out_coarse(seg, s, others)), service))
            rows.append(dict(query=ep["query"], name=image(ep["query"])["name"], cands=rows_of(ep, service), loo=loo))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), rows[-1]["name"], f"{time.process_time() - started:.1f} CPU-s", flush=True)
    print(f"load average {os.getloadavg()}")


# ---- rules: score = contrast + w * likeness - v * size_dev ------------------------------------------------
W_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
V_GRID = (0.0, 0.05, 0.1, 0.2, 0.4)
TODAY = (1.0, 0.0)


def pick(cands: list[dict], w: float, v: float) -> float:
    """Dice (decoder resolution) of the candidate the rule (w, v) picks; 0 without candidates."""
    if not cands:
        return 0.0
    return max(cands, key=lambda c: c["contrast"] + w * c["likeness"] - v * c["size_dev"])["dice_low"]


def calibrate(loo: list[list[dict]], min_gain: float, grid=None) -> tuple[float, float]:
    """The (w, v) of the grid whose picks on the held-out supports have the highest mean Dice, if it beats
    today's by more than `min_gain` (mean Dice over the supports); ties -> the one closest to today's."""
    grid = grid or [(w, v) for w in W_GRID for v in V_GRID]
    base = np.mean([pick(c, *TODAY) for c in loo]) if loo else 0.0
    best, best_score = TODAY, base + min_gain
    for w, v in sorted(grid, key=lambda g: abs(g[0] - 1) + abs(g[1])):
        score = np.mean([pick(c, w, v) for c in loo])
        if score > best_score + 1e-9:
            best, best_score = (w, v), score
    return best


def report(tags: list[str], min_gain: float) -> None:
    for tag in tags:
        rows = pickle.load(open(OUT / f"loo_{tag}.pkl", "rb"))
        today = np.array([pick(r["cands"], *TODAY) for r in rows])
        oracle = np.array([max([c["dice_low"] for c in r["cands"]] or [0]) for r in rows])
        loo_today = np.mean([pick(c, *TODAY) for r in rows for c in r["loo"]])
        chosen = [calibrate(r["loo"], min_gain) for r in rows]
        calib = np.array([pick(r["cands"], *c) for r, c in zip(rows, chosen)])
        delta = calib - today
        print(f"{tag} n={len(rows)} today {today.mean():.4f}  calibrated(min_gain {min_gain}) {calib.mean():.4f} "
              f"delta {delta.mean():+.4f} (better {np.sum(delta > 1e-6)}, worse {np.sum(delta < -1e-6)}, "
              f"changed weights {sum(c != TODAY for c in chosen)})  oracle {oracle.mean():.4f}  "
              f"supports' own today {loo_today:.4f}")
        for n, (r, c, d) in enumerate(zip(rows, chosen, delta)):
            if abs(d) > 1e-6:
                print(f"    ep {n:2d} {r['name']:16s} w={c[0]} v={c[1]}  {today[n]:.3f} -> {calib[n]:.3f}")
        fixed = {(w, v): np.mean([pick(r["cands"], w, v) for r in rows]) for w in W_GRID for v in V_GRID}
        top = sorted(fixed.items(), key=lambda kv: -kv[1])[:4]
        print("   fixed weights (for reference, not chosen per episode): best " +
              ", ".join(f"w={k[0]} v={k[1]}: {s:.4f}" for k, s in top))


# ---- decoys: what the set's wrong picks look like (the held-out supports' high-scoring misses) ------------
def decoy_vectors(loo: list[list[dict]], top: int = 3, miss: float = 0.1) -> np.ndarray | None:
    """(n, C) mean embeddings of the held-out supports' candidates among today's `top` scores with Dice < miss."""
    out = []
    for cands in loo:
        ranked = sorted(cands, key=lambda c: -(c["contrast"] + c["likeness"]))[:top]
        out += [c["vec"] for c in ranked if c["dice_low"] < miss]
    return np.stack(out) if out else None


def cosines(vectors: np.ndarray | None, v: np.ndarray, how: str) -> float:
    if vectors is None:
        return 0.0
    c = vectors @ v / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(v), 1e-12)
    return float(c.max() if how == "max" else c.mean())


def pick_decoy(cands: list[dict], decoys, u: float, how: str) -> float:
    if not cands:
        return 0.0
    return max(cands, key=lambda c: c["contrast"] + c["likeness"] - u * cosines(decoys, c["vec"], how))["dice_low"]


def report_decoys(tags: list[str], min_gain: float, how: str = "max") -> None:
    """Fixed u (decoy term weight) and u chosen by nested leave one out (decoys of the other supports)."""
    grid = (0.0, 0.25, 0.5, 1.0)
    for tag in tags:
        rows = pickle.load(open(OUT / f"loo_{tag}.pkl", "rb"))
        today = np.array([pick(r["cands"], *TODAY) for r in rows])
        for u in grid[1:]:
            d = np.array([pick_decoy(r["cands"], decoy_vectors(r["loo"]), u, how) for r in rows])
            print(f"{tag} decoy({how}) fixed u={u}: {d.mean():.4f} vs today {today.mean():.4f} "
                  f"(better {np.sum(d > today + 1e-6)}, worse {np.sum(d < today - 1e-6)})")
        chosen = []
        for r in rows:
            score = {u: np.mean([pick_decoy(c, decoy_vectors(r["loo"][:s] + r["loo"][s + 1:]), u, how)
                                 for s, c in enumerate(r["loo"])]) for u in grid}
            best = max(grid, key=lambda u: (score[u] - (0 if u == 0 else min_gain), -u))
            chosen.append(best)
        d = np.array([pick_decoy(r["cands"], decoy_vectors(r["loo"]), u, how) for r, u in zip(rows, chosen)])
        print(f"{tag} decoy({how}) u by leave one out (min_gain {min_gain}): {d.mean():.4f} vs today "
              f"{today.mean():.4f} delta {np.mean(d - today):+.4f} (better {np.sum(d > today + 1e-6)}, "
              f"worse {np.sum(d < today - 1e-6)}, u != 0 on {sum(u > 0 for u in chosen)})")


# ---- general: score = contrast + w * likeness - v * size_dev + a * inside + b * cover ------------------------
def rule_pick(cands: list[dict], rule: tuple) -> float:
    w, v, a, b = rule
    if not cands:
        return 0.0
    return max(cands, key=lambda c: c["contrast"] + w * c["likeness"] - v * c["size_dev"] + a * c["inside"]
               + b * c["cover"])["dice_low"]


FAMILIES = {
    "likeness/size weights": [(w, v, 0.0, 0.0) for w in W_GRID for v in V_GRID],
    "trust in the coarse map (inside, cover)": [(1.0, 0.0, a, b) for a in (0, 0.1, 0.25, 0.5)
                                                for b in (0, 0.1, 0.25, 0.5)],
    "all four (small grid)": [(w, v, a, b) for w in (0.5, 1.0, 1.5) for v in (0, 0.1) for a in (0, 0.1, 0.25)
                              for b in (0, 0.1, 0.25)],
}
BASE = (1.0, 0.0, 0.0, 0.0)


def calibrate_rule(loo: list[list[dict]], grid: list[tuple], min_gain: float) -> tuple:
    """The grid's rule of highest mean held-out-support Dice if it beats today's by more than min_gain; ties
    and anything less -> today's (BASE); among equals the one nearest BASE."""
    if not loo:
        return BASE
    best, best_score = BASE, np.mean([rule_pick(c, BASE) for c in loo]) + min_gain
    for rule in sorted(grid, key=lambda r: sum(abs(x - y) for x, y in zip(r, BASE))):
        score = np.mean([rule_pick(c, rule) for c in loo])
        if score > best_score + 1e-9:
            best, best_score = rule, score
    return best


def report_general(tags: list[str], gains: list[float]) -> None:
    for tag in tags:
        rows = pickle.load(open(OUT / f"loo_{tag}.pkl", "rb"))
        today = np.array([rule_pick(r["cands"], BASE) for r in rows])
        oracle = np.mean([max([c["dice_low"] for c in r["cands"]] or [0]) for r in rows])
        sup = np.mean([rule_pick(c, BASE) for r in rows for c in r["loo"]])
        print(f"{tag}: {len(rows)} episodes, today {today.mean():.4f}, oracle {oracle:.4f}, "
              f"today on the held-out supports {sup:.4f}")
        for fam, grid in FAMILIES.items():
            fixed = {rule: np.mean([rule_pick(r["cands"], rule) for r in rows]) for rule in grid}
            top = max(sorted(fixed, key=lambda r: sum(abs(x - y) for x, y in zip(r, BASE))), key=fixed.get)
            print(f"  [{fam}] best fixed rule on these episodes {top}: {fixed[top]:.4f}")
            for gain in gains:
                chosen = [calibrate_rule(r["loo"], grid, gain) for r in rows]
                d = np.array([rule_pick(r["cands"], c) for r, c in zip(rows, chosen)]) - today
                print(f"  [{fam}] leave one out, min_gain {gain}: {today.mean() + d.mean():.4f} delta "
                      f"{d.mean():+.4f} (better {np.sum(d > 1e-6)}, worse {np.sum(d < -1e-6)}, rule changed on "
                      f"{sum(c != BASE for c in chosen)}); deltas " +
                      " ".join(f"{x:+.2f}" for x in d if abs(x) > 1e-6))


def report_fixed(tags: list[str]) -> None:
    """Not leave one out, for comparison: one fixed rule of the grids, chosen on the seed-0 tags (sum of the
    gains), checked on the others; and whether the held-out supports' Dice says anything about the query's."""
    rows = {t: pickle.load(open(OUT / f"loo_{t}.pkl", "rb")) for t in tags}
    grid = sorted(set(FAMILIES["all four (small grid)"]) | set(FAMILIES["trust in the coarse map (inside, cover)"]))
    per = {(t, r): np.array([rule_pick(x["cands"], r) for x in rows[t]]) for t in tags for r in grid + [BASE]}
    gain = {r: sum(per[t, r].mean() - per[t, BASE].mean() for t in tags if t.startswith("s0")) for r in grid}
    best = max(sorted(grid, key=lambda r: sum(abs(x - y) for x, y in zip(r, BASE))), key=gain.get)
    for r in (BASE, best):
        print(r, " | ".join(f"{t} {per[t, r].mean():.4f} ({np.mean(per[t, r] - per[t, BASE]):+.4f}; "
                            f"{np.sum(per[t, r] > per[t, BASE] + 1e-6)}+/{np.sum(per[t, r] < per[t, BASE] - 1e-6)}-)"
                            for t in tags))
    for t in tags:
        sup = np.array([np.mean([rule_pick(c, BASE) for c in x["loo"]]) for x in rows[t]])
        q = per[t, BASE]
        low = sup < np.median(sup)
        print(f"{t}: query Dice where the held-out supports did worse than the median episode {q[low].mean():.3f} "
              f"({low.sum()}), else {q[~low].mean():.3f}; Pearson r {np.corrcoef(sup, q)[0, 1]:+.2f}; misses "
              f"(Dice < 0.1): supports {np.mean([rule_pick(c, BASE) < 0.1 for x in rows[t] for c in x['loo']]):.2f}, "
              f"queries {np.mean(q < 0.1):.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        for gain in [float(g) for g in (sys.argv[3] if len(sys.argv) > 3 else "0,0.02,0.05").split(",")]:
            report(sys.argv[2].split(","), gain)
    elif sys.argv[1] == "--general":
        report_general(sys.argv[2].split(","), [float(g) for g in (sys.argv[3] if len(sys.argv) > 3 else "0,0.02,0.05").split(",")])
    elif sys.argv[1] == "--fixed":
        report_fixed(sys.argv[2].split(","))
    elif sys.argv[1] == "--decoys":
        for how in ("max", "mean"):
            report_decoys(sys.argv[2].split(","), float(sys.argv[3]) if len(sys.argv) > 3 else 0.02, how)
    else:
        dump(sys.argv[1].split(","), int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "all" else None,
             int(sys.argv[3]) if len(sys.argv) > 3 else 99)
