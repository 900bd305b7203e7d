"""Per-candidate features of propose-and-select on BUSI, offline, through the code's own candidates
(core/select_objects.py: proposals, low-resolution bfloat16 decode, the coarse-cover filter) on
busi_select_dump.py's episodes (/tmp/select/data): for rule experiments without decoding again.

    python benchmarks/busi_select_features.py s0_k20_n50,s1_k20_n50   # -> /tmp/busi11/feat_TAG.pkl

Per episode: the support lesions' mean LiteMedSAM embeddings (n, C), each support image's background mean
(outside its lesion) and ring mean (around its lesion, select_objects' ring width); per candidate: its mean
embedding (C,), embedding contrast, share of the coarse finding it covers, share of it inside the coarse
finding, mean class margin inside, area share, Dice at the decoder's resolution.
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busi_select_score import DATA, decoder_of, embedding, image, query_of  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.core.select_objects import (RING, candidates, embedding_contrast, embedding_mean,  # noqa: E402
                                                low_res, ring_around)
from napari_fewshot.evaluation.busi import localisation  # noqa: E402


def vec(emb, mask):
    v = embedding_mean(emb, mask)
    return None if v is None else v.numpy().astype(np.float32)


def episode(ep: dict, service: LiteMedSAMService) -> dict:
    q, truth, emb, coarse, margin, profile = query_of(ep)
    sup_bg, sup_ring = [], []
    for i in ep["supports"]:
        m = image(i)["mask"].astype(bool)
        if m.any():
            sup_bg.append(vec(embedding(i), ~m))
            sup_ring.append(vec(embedding(i), ring_around(m, max(3, int(round(RING * np.sqrt(m.sum())))))))

    boxes, masks = candidates(margin, coarse, decoder_of(service, emb), profile, emb.resized)
    share = low_res(coarse, emb.resized)
    margin_low = torch.nn.functional.interpolate(torch.from_numpy(margin)[None, None], size=emb.resized,
                                                 mode="area")[0, 0].numpy()
    small = low_res(truth, emb.resized) > 0.5
    rows = []
    for m in masks:
        rows.append(dict(vec=vec(emb, m), contrast=embedding_contrast(emb, m), area=float(m.mean()),
                         cover=float(share[m].sum() / max(share.sum(), 1e-9)),
                         inside=float(share[m].mean()), margin=float(margin_low[m].mean()),
                         dice_low=localisation(m, small)["dice"]))
    return dict(query=q, name=image(q)["name"], cands=rows, lesions=profile.appearance.astype(np.float32),
                sup_bg=np.stack(sup_bg), sup_ring=np.stack(sup_ring), log_area=profile.log_area)


def main() -> None:
    service = LiteMedSAMService("cpu")
    for tag in sys.argv[1].split(","):
        out = Path(f"/tmp/busi11/feat_{tag}.pkl")
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        episodes = pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))
        for ep in episodes[len(rows):]:
            started = time.process_time()
            rows.append(episode(ep, service))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), rows[-1]["name"], f"{time.process_time() - started:.1f} CPU-s", flush=True)


if __name__ == "__main__":
    main()
