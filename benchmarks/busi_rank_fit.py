"""A tiny ranker for propose and select on BUSI, scored on query images it was not fitted on (issue 20, session 14
"rank"), from busi_rank_dump.py's candidates (/tmp/rank/cands_TAG.pkl).

    python benchmarks/busi_rank_fit.py s0_k5_n50,s1_k5_n50,s0_k20_n50,s1_k20_n50 [--expected | --top] [--lam L]
        [--only-all] [--within] [--forward K] [--extra s2_k5_n50,...] [--weights]

Options: --expected fits the softmax-expected Dice of the pick instead of the pairwise loss (the primary
variant in BENCHMARKS.md); --top uses only the best candidate's pairs; --lam fixes the L2 weight (otherwise
chosen by the nested split); --only-all skips the leave-one-group-out / one-group rows; --within standardises
each cue over the episode's own candidates; --forward K chooses at most K cue columns greedily inside the
training half; --per-shot fits one ranker per shot count; --extra adds other draws' episodes to training only (never scored); --weights prints the ranker
fitted on all episodes. RANK_DIR: where busi_rank_dump.py wrote (default /tmp/rank).

Score = a * (contrast + likeness) + b . x: today's score plus a linear term in standardised cues x, fitted by
pairwise logistic regression within each episode (every pair of candidates whose full-size Dice differ by more
than 0.05, weighted by the difference, each episode's pairs summing to one), L2 on b only, so the fit shrinks
towards today's rule. Folds: the 120 images split in two halves, benign and malignant halved separately (a fixed
permutation); a ranker is fitted on every episode (all four seed/shot settings pooled) whose QUERY lies in one
half and scores the episodes whose query lies in the other. lam is chosen inside the training half by a nested
2-fold split (same rule), never on the scored half. Reported per setting over all its episodes, each scored by
the ranker of the other half: mean Dice, hit rate, Dice on hits (full size), today's rule beside it.
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np
from scipy.optimize import minimize

GROUPS = {
    "map": ["peak", "margin", "cover", "inside"],
    "iou": ["quality"],
    "intensity": ["int_mean", "int_p10", "int_p90", "int_sd", "d_int", "abs_d_int", "ring_minus_in", "d_ring"],
    "posterior": ["post", "post_vs_in", "d_post", "abs_d_post"],
    "shape": ["solidity", "circularity", "aspect", "abs_d_aspect"],
    "depth": ["depth", "top", "d_depth", "abs_d_depth"],
    "size": ["d_log_area", "abs_d_log_area"],
    "marks": ["border", "bright", "black"],
    "consensus": ["consensus", "agree", "stability"],
}
OBJECTIVE = "pairs"  # or "top" (--top): only the pairs of the best candidate
WITHIN = "--within" in sys.argv
DIR = os.environ.get("RANK_DIR", "/tmp/rank")  # where busi_rank_dump.py wrote
LAMS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
LAMS_EXPECTED = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def load(tags: list[str]) -> list[dict]:
    """Episodes with X: (N, F) all cues, base: (N,) today's score, dice / hit: (N,), tag, query name."""
    names = sorted(GROUPS)
    out = []
    for tag in tags:
        for ep in pickle.load(open(f"{DIR}/cands_{tag}.pkl", "rb")):
            if not ep["cands"]:
                out.append(dict(tag=tag, name=ep["name"], X=None))
                continue
            sup = {k: np.mean([s[k] for s in ep["support"]]) for k in ep["support"][0]}
            rows = []
            for c in ep["cands"]:
                f = dict(c, d_int=c["int_mean"] - sup["int_mean"], d_ring=c["ring_minus_in"] - sup["ring_minus_in"],
                         d_post=c["post"] - sup["post"], d_depth=c["depth"] - sup["depth"],
                         d_log_area=c["log_area"] - float(np.mean(ep["sup_log_area"])))
                for k in GROUPS["consensus"]:
                    f.setdefault(k, 0.0)  # dumps made before these cues
                f.update(abs_d_int=abs(f["d_int"]), abs_d_post=abs(f["d_post"]), abs_d_depth=abs(f["d_depth"]),
                         abs_d_log_area=abs(f["d_log_area"]), abs_d_aspect=abs(c["aspect"] - sup["aspect"]))
                rows.append([f[k] for g in names for k in GROUPS[g]])
            c = ep["cands"]
            X = np.array(rows, np.float64)
            if WITHIN:  # each cue standardised over the episode's own candidates
                X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-6)
            out.append(dict(tag=tag, name=ep["name"], X=X,
                            base=np.array([r["contrast"] + r["likeness"] for r in c]),
                            dice=np.array([r["dice"] for r in c]), hit=np.array([r["hit"] for r in c])))
    return out


COLUMNS = [k for g in sorted(GROUPS) for k in GROUPS[g]]


def pairs(eps: list[dict], cols: list[int]):
    D, W = [], []
    for e in eps:
        if e["X"] is None or len(e["dice"]) < 2:
            continue
        Z = np.column_stack([e["base"], e["X"][:, cols]])
        diff = e["dice"][:, None] - e["dice"][None, :]
        if OBJECTIVE == "top":  # only the best candidate against each other one
            diff[np.arange(len(diff)) != np.argmax(e["dice"])] = 0
        i, j = np.nonzero(diff > 0.05)
        if not len(i):
            continue
        w = diff[i, j]
        D.append(Z[i] - Z[j])
        W.append(w / w.sum())
    return np.concatenate(D), np.concatenate(W)


def fit_expected(eps: list[dict], cols: list[int], lam: float, mu, sd) -> np.ndarray:
    """Weights maximising the mean over episodes of the softmax-expected Dice of the pick (listwise, started at
    today's rule: a = START, b = 0), minus lam |b|^2."""
    data = [(np.column_stack([e["base"], (e["X"][:, cols] - mu) / sd]), e["dice"]) for e in eps
            if e["X"] is not None and len(e["dice"]) > 1]

    def loss(beta):
        value, grad = 0.0, np.zeros_like(beta)
        for Z, d in data:
            s = Z @ beta
            p = np.exp(s - s.max())
            p /= p.sum()
            expected = p @ d
            value -= expected
            grad -= Z.T @ (p * (d - expected))
        value, grad = value / len(data), grad / len(data)
        value += lam * (beta[1:] ** 2).sum()
        grad[1:] += 2 * lam * beta[1:]
        return value, grad

    beta0 = np.zeros(1 + len(cols))
    beta0[0] = START
    return minimize(loss, beta0, jac=True, method="L-BFGS-B").x


START = 30.0  # today's score times this: softmax logits of a few units between candidates


def fit(eps: list[dict], cols: list[int], lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (1 + F,), feature mean, feature sd) of the ranker on these episodes (OBJECTIVE)."""
    X = np.concatenate([e["X"][:, cols] for e in eps if e["X"] is not None])
    mu, sd = X.mean(0), np.maximum(X.std(0), 1e-9)
    if OBJECTIVE == "expected":
        return fit_expected(eps, cols, lam, mu, sd), mu, sd
    D, W = pairs(eps, cols)
    D = D.copy()
    D[:, 1:] /= sd  # differences: the mean cancels
    n = W.sum()

    def loss(beta):
        s = D @ beta
        value = (W * np.logaddexp(0, -s)).sum() / n + lam * (beta[1:] ** 2).sum()
        g = -(W * 0.5 * (1 - np.tanh(s / 2)))[:, None] * D
        grad = g.sum(0) / n
        grad[1:] += 2 * lam * beta[1:]
        return value, grad

    beta0 = np.zeros(1 + len(cols))
    beta0[0] = 1.0
    res = minimize(loss, beta0, jac=True, method="L-BFGS-B")
    return res.x, mu, sd


def picks(eps: list[dict], model, cols: list[int]) -> list[tuple[float, bool]]:
    out = []
    for e in eps:
        if e["X"] is None:
            out.append((0.0, False))
            continue
        if model is None:
            s = e["base"]
        else:
            beta, mu, sd = model
            s = beta[0] * e["base"] + ((e["X"][:, cols] - mu) / sd) @ beta[1:]
        k = int(np.argmax(s))
        out.append((float(e["dice"][k]), bool(e["hit"][k])))
    return out


def folds(names: list[str], seed: int = 20) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    out = {}
    for cls in ("benign", "malignant"):
        group = sorted(n for n in names if n.startswith(cls))
        order = rng.permutation(len(group))
        for r, k in enumerate(order):
            out[group[k]] = r % 2
    return out


def choose_lam(train: list[dict], cols: list[int], fold_of: dict[str, int]) -> float:
    """lam by a nested 2-fold split of the training half (by query image, a second fixed permutation)."""
    inner = folds(sorted({e["name"] for e in train}), seed=21)
    best, best_lam = -1.0, LAMS[0]
    for lam in (LAMS_EXPECTED if OBJECTIVE == "expected" else LAMS):
        got = []
        for f in (0, 1):
            a = [e for e in train if inner[e["name"]] != f]
            b = [e for e in train if inner[e["name"]] == f]
            got += [d for d, _ in picks(b, fit(a, cols, lam), cols)]
        if np.mean(got) > best + 1e-9:
            best, best_lam = float(np.mean(got)), lam
    return best_lam


def inner_score(train: list[dict], cols: list[int], lam: float) -> float:
    """Mean Dice of the picks over the training half, each scored by a ranker fitted on its other inner half."""
    inner = folds(sorted({e["name"] for e in train}), seed=21)
    got = []
    for f in (0, 1):
        a = [e for e in train if inner[e["name"]] != f]
        got += [d for d, _ in picks([e for e in train if inner[e["name"]] == f], fit(a, cols, lam), cols)]
    return float(np.mean(got))


def forward(train: list[dict], lam: float, most: int, pool: list[int]) -> list[int]:
    """Greedy forward choice of at most `most` cue columns by inner_score (training half only); a column joins
    only if it raises the inner score by more than 0.002 over today's rule / the columns so far."""
    chosen: list[int] = []
    best = float(np.mean([d for d, _ in picks(train, None, [])]))
    for _ in range(most):
        trials = {c: inner_score(train, chosen + [c], lam) for c in pool if c not in chosen}
        c = max(trials, key=trials.get)
        if trials[c] <= best + 0.002:
            break
        chosen.append(c)
        best = trials[c]
    return chosen


EXTRA: list[dict] = []  # training-only episodes (--extra: other seeds' draws), filtered by the query's half


def held_out(eps: list[dict], cols: list[int], fold_of: dict[str, int], lam: float | None,
             most: int = 0) -> dict[int, tuple]:
    """episode position -> (Dice, hit) of the ranker fitted on the other half; and the lams (or, with `most`,
    the forward-chosen columns) per half."""
    if PER_SHOT:  # one ranker per shot count, each fitted on that count's episodes only
        out, lams = {}, []
        for shots in sorted({e["tag"].split("_")[1] for e in eps}):
            mine = [n for n, e in enumerate(eps) if e["tag"].split("_")[1] == shots]
            keep = [e for e in EXTRA if e["tag"].split("_")[1] == shots]
            res, got = _held_out([eps[n] for n in mine], cols, fold_of, lam, most, keep)
            out.update({mine[k]: r for k, r in res.items()})
            lams.append(got)
        return out, lams
    return _held_out(eps, cols, fold_of, lam, most, EXTRA)


PER_SHOT = "--per-shot" in sys.argv


def _held_out(eps, cols, fold_of, lam, most, extra):
    out, lams = {}, []
    for f in (0, 1):
        train = [e for e in eps + extra if fold_of[e["name"]] != f]
        if most:
            fold_cols = forward(train, lam, most, cols)
            lams.append([COLUMNS[c] for c in fold_cols])
            model = fit(train, fold_cols, lam)
            test = [n for n, e in enumerate(eps) if fold_of[e["name"]] == f]
            for n, r in zip(test, picks([eps[n] for n in test], model, fold_cols)):
                out[n] = r
            continue
        chosen = choose_lam(train, cols, fold_of) if lam is None else lam
        lams.append(chosen)
        model = fit(train, cols, chosen)
        test = [n for n, e in enumerate(eps) if fold_of[e["name"]] == f]
        for n, r in zip(test, picks([eps[n] for n in test], model, cols)):
            out[n] = r
    return out, lams


def summary(results: list[tuple[float, bool]]) -> str:
    d = np.array([r[0] for r in results])
    h = np.array([r[1] for r in results])
    return f"{d.mean():.3f} ({h.mean():.2f}, {d[h].mean() if h.any() else 0:.3f})"


def main() -> None:
    tags = sys.argv[1].split(",")
    lam = float(sys.argv[sys.argv.index("--lam") + 1]) if "--lam" in sys.argv else None
    global OBJECTIVE
    OBJECTIVE = "top" if "--top" in sys.argv else "expected" if "--expected" in sys.argv else "pairs"
    eps = load(tags)
    from napari_fewshot.evaluation.datasets import load_busi  # only the names
    names = load_busi("../shared/data/busi")[0]
    fold_of = folds(names)
    every = list(range(len(COLUMNS)))
    variants = {"all cues": every}
    for g in sorted(GROUPS):
        variants[f"all but {g}"] = [COLUMNS.index(k) for k in COLUMNS if k not in GROUPS[g]]
    for g in sorted(GROUPS):
        variants[f"today + {g} only"] = [COLUMNS.index(k) for k in GROUPS[g]]
    if "--only-all" in sys.argv:
        variants = {"all cues": every}
    most = int(sys.argv[sys.argv.index("--forward") + 1]) if "--forward" in sys.argv else 0
    if most:
        variants = {f"forward, at most {most} cues": every}
    if "--extra" in sys.argv:
        EXTRA.extend(e for e in load(sys.argv[sys.argv.index("--extra") + 1].split(",")) if e["X"] is not None)
    print("setting | " + " | ".join(tags))
    base = [summary([picks([e], None, [])[0] for e in eps if e["tag"] == t]) for t in tags]
    print("today (contrast + likeness) | " + " | ".join(base))
    oracle = [summary([(float(e["dice"].max()), bool(e["hit"][np.argmax(e["dice"])])) if e["X"] is not None
                       else (0.0, False) for e in eps if e["tag"] == t]) for t in tags]
    print("oracle | " + " | ".join(oracle))
    for name, cols in variants.items():
        res, lams = held_out(eps, cols, fold_of, lam, most)
        cells = []
        for t in tags:
            idx = [n for n, e in enumerate(eps) if e["tag"] == t]
            mine = [res[n] for n in idx]
            today = np.array([picks([eps[n]], None, [])[0][0] for n in idx])
            diff = np.array([r[0] for r in mine]) - today
            cells.append(f"{summary(mine)} {diff.mean():+.3f} ({(diff > 0.01).sum()}/{(diff < -0.01).sum()})")
        print(f"{name} (lam {lams}) | " + " | ".join(cells), flush=True)
    if "--weights" in sys.argv:
        beta, mu, sd = fit(eps, every, lam if lam is not None else choose_lam(eps, every, fold_of))
        for k, b, m, s in zip(["today"] + COLUMNS, beta, [0] + list(mu), [1] + list(sd)):
            print(f"{k:16s} {b:+.3f} (mean {m:.3f}, sd {s:.3f})")


if __name__ == "__main__":
    main()
