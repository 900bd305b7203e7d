"""The likeness term, scored offline on the session-8 candidates (busi_select_candidates.py's dumps: every candidate
decoded at full size in float32, with its embedding contrast `sam_inout` and its mean cosine to the support
lesions' mean LiteMedSAM embeddings `sam_les_mean`), 50 episodes x seeds 0 and 1, BUSI 5-shot, with the
coarse-cover filter of core/select_objects.py (MIN_COVER) recomputed from the dumped coarse maps.

    python benchmarks/busi_select_likeness.py     # reads /tmp/select/cands_*.pkl and /tmp/select/data

The seed-0 dump came in three pieces (episodes 0-26, 27-39, 40-49) and seed 1 in two (0-41, 42-49): the
interrupted runs of session 8. Each row: mean Dice (hit rate, Dice on hits) for seed 0, then seed 1.
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core.predict import upsample  # noqa: E402
from napari_fewshot.core.select_objects import MIN_COVER  # noqa: E402

ROOT = Path("/tmp/select")
PIECES = {0: [("s0_k5_n50_50", 0, 27), ("s0_k5_n50_27_40", 0, 13), ("s0_k5_n50_40_50", 0, 10)],
          1: [("s1_k5_n50_50", 0, 42), ("s1_k5_n50_42_50", 0, 8)]}


def load(seed: int) -> list[dict]:
    """The 50 episodes' candidates of a seed, each with `cover`: its share of the coarse prediction."""
    rows = []
    for tag, start, count in PIECES[seed]:
        rows += pickle.load(open(ROOT / f"cands_{tag}.pkl", "rb"))[start:start + count]
    episodes = pickle.load(open(ROOT / "data" / f"eps_s{seed}_k5_n50.pkl", "rb"))
    for row, ep in zip(rows, episodes):
        assert row["query"] == ep["query"]
        shape = torch.load(ROOT / "data" / f"img_{ep['query']}.pt", weights_only=False)["shape"]
        coarse = upsample(torch.from_numpy(ep["coarse"])[None], shape)[0].numpy().argmax(0) == 1
        for c in row["cands"]:
            c["cover"] = c["in_coarse"] * c["area"] * coarse.size / max(1, int(coarse.sum()))
    return rows


def summary(locs: list[dict]) -> str:
    hits = [loc for loc in locs if loc["hit"]]
    return "%.3f (%.2f, %.3f)" % (np.mean([loc["dice"] for loc in locs]), len(hits) / len(locs),
                                  np.mean([loc["dice"] for loc in hits]))


def main() -> None:
    runs = {seed: load(seed) for seed in (0, 1)}
    first = lambda c: "2nd" not in c["origin"]  # noqa: E731  (the code decodes no second pass)
    covers = lambda c: first(c) and c["cover"] >= MIN_COVER  # noqa: E731

    def show(name, rule, keep=covers):
        picks = {s: [max([c for c in r["cands"] if keep(c)] or [r["coarse"]], key=rule) for r in rows]
                 for s, rows in runs.items()}
        print(f"{name:48s}" + "  ".join(summary(picks[s]) for s in runs))

    show("contrast, no cover filter", lambda c: -c["sam_inout"], first)
    show("contrast (the previous default)", lambda c: -c["sam_inout"])
    show("contrast + likeness (the new default)", lambda c: -c["sam_inout"] + c["sam_les_mean"])
    for weight in (0.25, 0.5, 2.0):  # sensitivity only: the default adds the two cosines unweighted
        show(f"contrast + {weight} x likeness", lambda c, w=weight: -c["sam_inout"] + w * c["sam_les_mean"])
    show("contrast + max cosine to a support lesion", lambda c: -c["sam_inout"] + c["sam_les_max"])
    show("contrast + likeness in lite0 features", lambda c: -c["sam_inout"] + c["lite_les_mean"])
    show("oracle (best candidate by the reference)", lambda c: c["dice"])
    # fewer candidates (cost), not the default: a choice made on this development set
    fewer = lambda c: covers(c) and not c["origin"].startswith("comp2") and "s1.4" not in c["origin"]  # noqa: E731
    show("default without comp. 3 and 1.4x peak boxes", lambda c: -c["sam_inout"] + c["sam_les_mean"], fewer)


if __name__ == "__main__":
    main()
