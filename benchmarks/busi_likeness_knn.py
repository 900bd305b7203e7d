"""With many painted lesions, is a candidate's likeness to its *nearest* painted lesions a better "looks like what
was painted" than the mean over all of them? Offline, through the code's own candidates (busi_select_score.py's
path: proposals, low-resolution bfloat16 decode, the coarse-cover filter) on busi_select_dump.py's episodes: per
candidate its embedding contrast, its cosine with each painted lesion's mean LiteMedSAM embedding, its Dice at the
decoder's resolution; the winners of each rule are decoded again at full size (as select_plane draws them).

    python benchmarks/busi_likeness_knn.py s0_k20_n50,s1_k20_n50 [FIRST]   # -> /tmp/select/knn_TAG.pkl, then the table

Rules: contrast + mean cosine (the default, SupportProfile.likeness), contrast + mean of the k highest cosines
(k = 1, 3, 5, and sqrt(n) of the n painted lesions). Choose on seed 0, report seed 1 as held out.

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

from busi_select_score import DATA, covering_candidates, decoder_of, image, query_of, report  # noqa: E402
from napari_fewshot.core.proposals import decoded_masks  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.core.select_objects import embedding_contrast, embedding_mean, low_res  # noqa: E402
from napari_fewshot.evaluation.busi import localisation  # noqa: E402


def top_mean(cosines: np.ndarray, k: int) -> float:
    """Mean of the k highest of a candidate's (n,) cosines with the painted lesions."""
    return float(np.sort(cosines)[::-1][:max(1, k)].mean())


RULES = {
    "contrast + mean cosine (default)": lambda c: c["contrast"] + float(c["cos"].mean()),
    "contrast + top-1 cosine": lambda c: c["contrast"] + top_mean(c["cos"], 1),
    "contrast + top-3 mean": lambda c: c["contrast"] + top_mean(c["cos"], 3),
    "contrast + top-5 mean": lambda c: c["contrast"] + top_mean(c["cos"], 5),
    "contrast + top-sqrt(n) mean": lambda c: c["contrast"] + top_mean(c["cos"], int(round(np.sqrt(len(c["cos"]))))),
    "oracle (by Dice at low resolution)": lambda c: c["dice_low"],
}


def episode(ep: dict, service: LiteMedSAMService) -> dict:
    q, truth, emb, coarse, margin, profile = query_of(ep)
    decode = decoder_of(service, emb)
    boxes, masks = covering_candidates(decode, emb, margin, coarse, profile)
    rows, small = [], low_res(truth, emb.resized) > 0.5
    rows_app = profile.appearance / np.linalg.norm(profile.appearance, axis=1, keepdims=True)
    for m in masks:
        v = embedding_mean(emb, m).numpy().astype(np.float64)
        rows.append(dict(contrast=embedding_contrast(emb, m), cos=rows_app @ v / max(np.linalg.norm(v), 1e-12),
                         area=float(m.mean()), dice_low=localisation(m, small)["dice"]))
    for n in {max(range(len(rows)), key=lambda j: rule(rows[j])) for rule in RULES.values()} if rows else ():
        rows[n].update(localisation(decoded_masks(boxes[n:n + 1], decode(boxes[n:n + 1], False))[0], truth))
    return dict(query=q, name=image(q)["name"], cands=rows)


def main() -> None:
    service = LiteMedSAMService("cpu")
    first = int(sys.argv[2]) if len(sys.argv) > 2 else None
    for tag in sys.argv[1].split(","):
        out = Path(f"/tmp/select/knn_{tag}.pkl")
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        episodes = pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[:first]
        rows = rows[:len(episodes)]
        for ep in episodes[len(rows):]:
            started = time.process_time()
            rows.append(episode(ep, service))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), rows[-1]["name"], f"{time.process_time() - started:.1f} CPU-s", flush=True)
        report(tag, rows, RULES)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
