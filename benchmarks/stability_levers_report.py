"""Check next's estimated error recomputed with cheaper stability signs, from stability_levers_once.py's JSONs
(issue 20 cost; session 16, helper "cost"). Per variant and seed: Spearman between the estimated error and
1 - Dice over the images not boxed, Kendall tau with today's estimated errors, where the misses (Dice < 0.05) rank
(1 = checked first), the decoder boxes Check next decodes per image.

    python benchmarks/stability_levers_report.py s1.json s2.json [--json OUT]
"""
import json
import sys

import numpy as np
from scipy.stats import kendalltau, spearmanr

GAIN = 4.0


def error(row, stability, quality):
    """uncertainty.image_error from the recorded other signs, with this stability and quality."""
    if not row.get("area"):
        return 1.0
    if stability == "estimate":
        return 1.0 - float(np.clip(quality, 0.0, 1.0))
    signs = list(row["others"])
    if stability is not None:
        signs.append(float(np.clip(GAIN * (1.0 - stability), 0.0, 1.0)))
    e = float(1.0 - np.prod([1.0 - s for s in signs]))
    return e if quality is None else 0.5 * (e + 1.0 - float(np.clip(quality, 0.0, 1.0)))


def from_candidates(row, threshold, key="box_iou"):
    """Mean mask IoU with the winner of the other candidates whose box overlaps the winner's by >= threshold."""
    cands = row.get("candidates") or []
    best = row.get("best")
    ious = [c["mask_iou"] for n, c in enumerate(cands) if n != best and c[key] >= threshold]
    return float(np.mean(ious)) if ious else None


def winner_estimate(row):
    cands = row.get("candidates") or []
    return cands[row["best"]]["estimate"] if cands else row.get("quality")


def only_estimate(quality):
    """Rank by LiteMedSAM's IoU estimate alone: the error is 1 - that estimate (nothing found: 1)."""
    return lambda r: ("estimate", quality(r))


VARIANTS = {  # name -> (row -> (stability, quality), boxes Check next decodes per image)
    "today (6 jittered + own box)": (lambda r: (np.mean(r["ious"][:6]), r["quality"]), 7),
    "selection: 1 - the winner's estimate (chosen on seeds 1, 2)": (only_estimate(winner_estimate), 0),
    "estimate: 1 - the own box's estimate (the default now)": (only_estimate(lambda r: r["quality"]), 1),
    "5 jittered": (lambda r: (np.mean(r["ious"][:5]), r["quality"]), 6),
    "4 jittered": (lambda r: (np.mean(r["ious"][:4]), r["quality"]), 5),
    "3 jittered": (lambda r: (np.mean(r["ious"][:3]), r["quality"]), 4),
    "2 jittered": (lambda r: (np.mean(r["ious"][:2]), r["quality"]), 3),
    "no stability (own box's quality only)": (lambda r: (None, r["quality"]), 1),
    "candidates box IoU>=0.3 + own box": (lambda r: (from_candidates(r, 0.3), r["quality"]), 1),
    "candidates box IoU>=0.5 + own box": (lambda r: (from_candidates(r, 0.5), r["quality"]), 1),
    "candidates box IoU>=0.7 + own box": (lambda r: (from_candidates(r, 0.7), r["quality"]), 1),
    "candidates mask IoU>0 + own box": (lambda r: (from_candidates(r, 1e-9, "mask_iou"), r["quality"]), 1),
    "candidates mask IoU>0, winner's estimate": (lambda r: (from_candidates(r, 1e-9, "mask_iou"), winner_estimate(r)), 0),
    "all other candidates + own box": (lambda r: (from_candidates(r, -1.0), r["quality"]), 1),
    "candidates box IoU>=0.1 + own box": (lambda r: (from_candidates(r, 0.1), r["quality"]), 1),
    "candidates box IoU>=0.5, winner's estimate": (lambda r: (from_candidates(r, 0.5), winner_estimate(r)), 0),
    "6 jittered, winner's estimate": (lambda r: (np.mean(r["ious"][:6]), winner_estimate(r)), 6),
    "4 jittered, winner's estimate": (lambda r: (np.mean(r["ious"][:4]), winner_estimate(r)), 4),
    "3 jittered, winner's estimate": (lambda r: (np.mean(r["ious"][:3]), winner_estimate(r)), 3),
    "3 jittered + candidates box IoU>=0.5 + own box": (lambda r: (np.mean(r["ious"][:3] + (
        [from_candidates(r, 0.5)] if from_candidates(r, 0.5) is not None else [])), r["quality"]), 4),
}


def main():
    paths = [a for a in sys.argv[1:] if a.endswith(".json") and not a.startswith("--")]
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    if out in paths:
        paths.remove(out)
    runs = [json.load(open(p)) for p in paths]
    table = {}
    print("| variant | boxes/image | " + " | ".join(f"seed {r['seed']}: Spearman / tau vs today / misses' places"
                                                 for r in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for name, (fn, nboxes) in VARIANTS.items():
        cells = []
        for run in runs:
            rows = run["rows"]
            today = [error(r, *VARIANTS["today (6 jittered + own box)"][0](r)) if r.get("area") else 1.0 for r in rows]
            recorded = [r["error"] for r in rows]
            assert np.allclose(today, recorded, atol=1e-9), (today, recorded)
            new = [error(r, *fn(r)) if r.get("area") else 1.0 for r in rows]
            wrong = [1 - r["dice"] for r in rows]
            rho = float(spearmanr(new, wrong)[0])
            tau = float(kendalltau(new, today)[0])
            order = list(np.argsort(-np.asarray(new), kind="stable"))
            misses = [order.index(n) + 1 for n, r in enumerate(rows) if r["dice"] < 0.05]
            cells.append(f"{rho:+.3f} / {tau:.3f} / {','.join(map(str, misses)) or '-'}")
            table.setdefault(name, {})[str(run["seed"])] = dict(spearman=rho, kendall_vs_today=tau, misses=misses,
                                                               boxes=nboxes)
        print(f"| {name} | {nboxes} | " + " | ".join(cells) + " |")
    for run in runs:
        n = [len(r.get("candidates") or []) for r in run["rows"]]
        near = [sum(1 for k, c in enumerate(r.get("candidates") or []) if k != r["best"] and c["box_iou"] >= 0.5)
                for r in run["rows"] if r.get("candidates")]
        print(f"seed {run['seed']}: candidates kept per image {np.mean(n):.1f}, decoded "
              f"{np.mean([r.get('decoded', 0) for r in run['rows']]):.1f}; others with box IoU >= 0.5: "
              f"mean {np.mean(near):.1f}, none on {sum(1 for x in near if x == 0)} images")
    if out:
        json.dump(table, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
