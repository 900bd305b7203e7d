"""Selection scores on BUSI, offline, through the code's own candidates (core/select_objects.py: proposals,
low-resolution bfloat16 decode, the coarse-cover filter) on busi_select_dump.py's episodes: per candidate its
embedding contrast, its likeness to the support lesions (mean cosine of mean LiteMedSAM embeddings), its area
its Dice at the decoder's resolution, and for each rule's winner its Dice / hit at full size (the box
decoded again, as select_plane draws its winner). Then mean Dice, hit
rate and Dice on hits per seed for: the contrast alone (the previous default), contrast + likeness (the new
default), and the oracle.

    python benchmarks/busi_select_score.py s0_k5_n50,s1_k5_n50 [FIRST_EPISODES]   # -> /tmp/select/score_TAG.pkl

⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core.predict import upsample  # noqa: E402
from napari_fewshot.core.proposals import decoded_masks  # noqa: E402
from napari_fewshot.core.sam_prompt import PlaneEmbedding  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.core.select_objects import (MIN_COVER, candidates, embedding_contrast, embedding_mean,  # noqa: E402
                                                low_res, support_profiles)
from napari_fewshot.evaluation.busi import localisation  # noqa: E402

DATA = Path("/tmp/select/data")
_images: dict[int, dict] = {}


def image(i: int) -> dict:
    if i not in _images:
        _images[i] = torch.load(DATA / f"img_{i}.pt", weights_only=False)
    return _images[i]


def embedding(i: int) -> PlaneEmbedding:
    d = image(i)
    return PlaneEmbedding(d["sam"].float(), d["shape"], d["scale"])


def query_of(ep: dict) -> tuple:
    """(query index, (H, W) reference mask, its PlaneEmbedding, (H, W) bool coarse finding, (H, W) lesion margin
    over the other classes, the supports' lesion profile) of one dumped episode (shared by the BUSI scripts)."""
    q = ep["query"]
    truth, emb = image(q)["mask"], embedding(q)
    scores = upsample(torch.from_numpy(ep["coarse"])[None], truth.shape)[0].numpy()
    coarse = scores.argmax(0) == 1
    margin = scores[1] - np.delete(scores, 1, 0).max(0)
    profile = support_profiles({i: image(i)["mask"].astype(np.int16) for i in ep["supports"]}, 1, embedding)[1]
    return q, truth, emb, coarse, margin, profile


def decoder_of(service: LiteMedSAMService, emb: PlaneEmbedding):
    """decode(boxes (N, 4), low) -> (N, h, w) probabilities on `emb`, as select_plane's candidates decode."""
    return lambda boxes, low: service.decode([(emb, boxes, None)], low_res=low)[0]


def covering_candidates(decode, emb: PlaneEmbedding, margin, coarse, profile) -> tuple:
    """select_objects' candidates ((N, 4) boxes, N low-res masks) that cover MIN_COVER of the coarse finding."""
    boxes, masks = candidates(margin, coarse, decode, profile, emb.resized)
    share = low_res(coarse, emb.resized)
    keep = [n for n, m in enumerate(masks) if not coarse.any() or share[m].sum() >= MIN_COVER * share.sum()]
    return boxes[keep], [masks[n] for n in keep]


def episode(ep: dict, service: LiteMedSAMService) -> dict:
    """One episode's candidates with their features and full-size Dice."""
    q, truth, emb, coarse, margin, profile = query_of(ep)
    decode = decoder_of(service, emb)
    boxes, masks = covering_candidates(decode, emb, margin, coarse, profile)
    rows, small = [], low_res(truth, emb.resized) > 0.5
    for m in masks:
        rows.append(dict(contrast=embedding_contrast(emb, m),
                         likeness=profile.likeness(embedding_mean(emb, m).numpy()),
                         area=float(m.mean()), dice_low=localisation(m, small)["dice"]))
    # full size (as select_plane draws its winner) for each rule's winner only: the decoder is the cost
    for n in {max(range(len(rows)), key=lambda j: rule(rows[j])) for rule in RULES.values()} if rows else ():
        rows[n].update(localisation(decoded_masks(boxes[n:n + 1], decode(boxes[n:n + 1], False))[0], truth))
    support = [profile.likeness(v) for v in profile.appearance]  # the support's own level (self included)
    return dict(query=q, name=image(q)["name"], cands=rows, support_level=support)


def summary(locs: list[dict]) -> tuple[float, float, float]:
    hits = [loc for loc in locs if loc["hit"]]
    return (float(np.mean([loc["dice"] for loc in locs])), len(hits) / len(locs),
            float(np.mean([loc["dice"] for loc in hits])) if hits else 0.0)


RULES = {
    "contrast (previous default)": lambda c: c["contrast"],
    "contrast + likeness (default)": lambda c: c["contrast"] + c["likeness"],
    "oracle (by Dice at low resolution)": lambda c: c["dice_low"],
}


def report(tag: str, rows: list[dict], rules: dict | None = None) -> None:
    """Mean Dice, hit rate and Dice on hits of each rule's pick (`rules`: name -> candidate score; RULES)."""
    miss = dict(dice=0.0, hit=False)
    rules = RULES if rules is None else rules
    width = max(map(len, rules))
    for name, rule in rules.items():
        picks = [max(r["cands"], key=rule) if r["cands"] else miss for r in rows]
        d, h, dh = summary(picks)
        print(f"{tag} {name:{width}s} {d:.3f} (hit rate {h:.2f}, Dice on hits {dh:.3f}) over {len(rows)} episodes")


def main() -> None:
    tags = sys.argv[1].split(",")
    first = int(sys.argv[2]) if len(sys.argv) > 2 else None
    service = LiteMedSAMService("cpu")
    for tag in tags:
        out = Path(f"/tmp/select/score_{tag}.pkl")
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        episodes = pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[:first]
        for ep in episodes[len(rows):]:
            started = time.process_time()
            rows.append(episode(ep, service))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), rows[-1]["name"], f"{time.process_time() - started:.1f} CPU-s", flush=True)
        report(tag, rows[: len(episodes)])
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
