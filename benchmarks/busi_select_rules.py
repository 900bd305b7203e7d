"""Selection rules scored on busi_select_candidates.py's candidates: mean Dice (hit rate, Dice on hits) per
seed for the default path (refine), the oracle (the best candidate by the reference) and each rule.

    python benchmarks/busi_select_rules.py s0_k5_n50_50,s1_k5_n50_50 [FIRST_EPISODES]

The kept rule (core/select_objects.py): the candidate of highest LiteMedSAM-embedding contrast with its ring
(`-sam_inout`, 1 - cosine of the mean embedding inside and around), among the candidates without the second
decoder pass (`no2nd`).
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np


def summary(locs):
    hits = [loc for loc in locs if loc["hit"]]
    return (np.mean([loc["dice"] for loc in locs]), len(hits) / len(locs),
            np.mean([loc["dice"] for loc in hits]) if hits else 0.0)


def main() -> None:
    tags = sys.argv[1].split(",")
    first = int(sys.argv[2]) if len(sys.argv) > 2 else None
    runs = {t: pickle.load(open(f"/tmp/select/cands_{t}.pkl", "rb"))[:first] for t in tags}

    def evaluate(rule, keep=lambda c: True):
        out = []
        for rows in runs.values():
            locs = []
            for row in rows:
                cands = [c for c in row["cands"] if keep(c)]
                locs.append(max(cands, key=rule) if cands else row["default"])
            out.append(summary(locs))
        return out

    def show(name, results):
        print(f"{name:44s}" + "  ".join(f"{d:.3f} (hit {h:.2f}, on hits {dh:.3f})" for d, h, dh in results))

    print("episodes per seed:", [len(r) for r in runs.values()])
    show("default (refine)", [summary([r["default"] for r in rows]) for rows in runs.values()])
    show("coarse (no refine)", [summary([r["coarse"] for r in rows]) for rows in runs.values()])
    show("oracle", evaluate(lambda c: c["dice"]))
    no2nd = lambda c: "2nd" not in c["origin"]  # noqa: E731
    comps = lambda c: c["origin"].startswith("comp") and "2nd" not in c["origin"]  # noqa: E731
    show("oracle among the component boxes", evaluate(lambda c: c["dice"], comps))
    show("KEPT: -sam_inout, no2nd", evaluate(lambda c: -c["sam_inout"], no2nd))
    show("-sam_inout, with second passes", evaluate(lambda c: -c["sam_inout"]))
    show("-sam_inout, component boxes only", evaluate(lambda c: -c["sam_inout"], comps))
    show("-sam_inout, no2nd, no top-area boxes", evaluate(lambda c: -c["sam_inout"],
                                                         lambda c: no2nd(c) and not c["origin"].startswith("top")))
    show("-sam_inout + sam_les_mean (support protos)", evaluate(lambda c: -c["sam_inout"] + c["sam_les_mean"], no2nd))
    show("-sam_inout + decoder IoU", evaluate(lambda c: -c["sam_inout"] + c["iou"], no2nd))
    show("-lite_inout (lite0 features' contrast)", evaluate(lambda c: -c["lite_inout"], no2nd))
    show("sam_les_mean - sam_bg_max", evaluate(lambda c: c["sam_les_mean"] - c["sam_bg_max"], no2nd))
    show("lite_les_mean - lite_bg_max", evaluate(lambda c: c["lite_les_mean"] - c["lite_bg_max"], no2nd))
    show("decoder IoU", evaluate(lambda c: c["iou"], no2nd))
    show("support_likeness-like: ring - 0.1 sizedev", evaluate(lambda c: c["ring"] - 0.1 * c["sizedev"], no2nd))


if __name__ == "__main__":
    main()
