"""Which of select_objects' candidate boxes are redundant, offline, through the code's proposals as they were
before session 12 (3 components, peak boxes of 0.7, 1 and 1.4 typical sizes) on busi_select_dump.py's episodes
(/tmp/select/data): every box select_plane decoded (after the cover filter and the exact-repeat cut), with its
kind (component and margin, peak and size, strongest-cells area), its selection score (contrast + likeness),
LiteMedSAM's IoU estimate and its Dice at the decoder's resolution. Then, per rule that drops boxes *before*
decoding, the boxes decoded per episode, how often the winner is the same, and the winner's mean Dice at the
decoder's resolution; and selection with LiteMedSAM's IoU estimate added to the score (issue 20, 20 shots).

    python benchmarks/busi_select_redundant.py s0_k5_n50,s1_k5_n50,s0_k20_n50,s1_k20_n50   # -> /tmp/busi12/red_TAG.pkl
    python benchmarks/busi_select_redundant.py s0_k5_n50,s1_k5_n50,s0_k20_n50,s1_k20_n50 --report

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from busi_select_score import DATA, query_of  # noqa: E402
from napari_fewshot.core import select_objects as so  # noqa: E402
from napari_fewshot.core.proposals import component_masks, decoded_masks, peak_points, propose_boxes  # noqa: E402
from napari_fewshot.core.sam_prompt import box_region  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.evaluation.busi import localisation  # noqa: E402


PEAK_SIZES = (0.7, 1.0, 1.4)  # select_objects.PEAK_SIZES before session 12
COMPONENTS = 3


def kinds(margin, coarse, profile, n_boxes):
    parts = component_masks(coarse, 64, COMPONENTS)
    out = [("comp", c, m) for c in range(len(parts)) for m in so.MARGINS]
    out += [("peak", p, s) for p in range(len(peak_points(margin, so.PEAKS))) for s in PEAK_SIZES]
    out += [("top", 0, 0)] * (n_boxes - len(out))
    return out


def episode(ep, service):
    q, truth, emb, coarse, margin, profile = query_of(ep)
    size = emb.resized
    boxes = propose_boxes(margin, coarse, profile, peaks=so.PEAKS, components=COMPONENTS, min_pixels=64,
                          box_margins=so.MARGINS, peak_sizes=PEAK_SIZES, top_areas=so.TOP_AREAS)
    tags = kinds(margin, coarse, profile, len(boxes))
    shrink = np.array([size[1] / margin.shape[1], size[0] / margin.shape[0]] * 2, np.float32)
    share = so.low_res(coarse, size)
    need = so.MIN_COVER * share.sum()
    keep = [n for n, b in enumerate(boxes * shrink) if share[box_region(b, size)].sum() >= need]
    boxes, tags = boxes[keep], [tags[n] for n in keep]
    first = np.sort(np.unique(boxes, axis=0, return_index=True)[1]) if len(boxes) else []
    boxes, tags = boxes[first], [tags[n] for n in first]
    small = so.low_res(truth, size) > 0.5
    rows = []
    if len(boxes):
        probs, quality = service.decode_with_quality([(emb, boxes, None)], low_res=True)[0]
        for box, tag, m, qv in zip(boxes, tags, decoded_masks(boxes * shrink, probs), quality):
            ok = bool(m.any()) and share[m].sum() >= need
            rows.append(dict(box=box, kind=tag, kept=ok, q=float(qv), area=float(m.mean()),
                             contrast=so.embedding_contrast(emb, m) if ok else None,
                             likeness=profile.likeness(so.embedding_mean(emb, m).numpy()) if ok else None,
                             dice_low=localisation(m, small)["dice"] if ok else 0.0, mask=np.packbits(m)))
    return dict(query=q, shape=margin.shape, cands=rows)


def _drop(kind_test):
    return lambda c: not kind_test(c["kind"])


DROP = {  # rules: which boxes are not decoded
    "all (before session 12)": lambda c: True,
    "peak boxes of 1.4 sizes on the strongest peak only (adopted)":
        _drop(lambda k: k[0] == "peak" and k[2] == 1.4 and k[1] >= 1),
    "no peak box of 1.4 sizes": _drop(lambda k: k[0] == "peak" and k[2] == 1.4),
    "peak boxes of 1.4 sizes on the 2 strongest peaks": _drop(lambda k: k[0] == "peak" and k[2] == 1.4 and k[1] >= 2),
    "no third component": _drop(lambda k: k[0] == "comp" and k[1] == 2),
    "no peak 1.4, no third component": _drop(lambda k: (k[0] == "peak" and k[2] == 1.4) or (k[0] == "comp" and k[1] == 2)),
    "no peak 1.4, 3 peaks": _drop(lambda k: k[0] == "peak" and (k[2] == 1.4 or k[1] >= 3)),
    "peaks <= 3": _drop(lambda k: k[0] == "peak" and k[1] >= 3),
    "no peak box of 0.7 sizes": _drop(lambda k: k[0] == "peak" and k[2] == 0.7),
    "no component box at margin 0.25": _drop(lambda k: k[0] == "comp" and k[2] == 0.25),
    "no strongest-cells box": _drop(lambda k: k[0] == "top"),
}
SCORES = {"contrast + likeness (default)": lambda c: c["contrast"] + c["likeness"]}
SCORES.update({f"contrast + likeness + {w} x IoU estimate": (lambda c, w=w: c["contrast"] + c["likeness"] + w * c["q"])
               for w in (0.1, 0.2, 0.5, 1.0)})
SCORES["oracle (Dice at the decoder's resolution)"] = lambda c: c["dice_low"]


def report(tags):
    for tag in tags:
        rows = pickle.load(open(f"/tmp/busi12/red_{tag}.pkl", "rb"))
        default = SCORES["contrast + likeness (default)"]
        base = [max((c for c in r["cands"] if c["kept"]), key=default, default=None) for r in rows]
        for name, keep in DROP.items():
            for score_name, score in SCORES.items():
                if score_name != "contrast + likeness (default)" and name not in list(DROP)[:3]:
                    continue
                picks = [max((c for c in r["cands"] if c["kept"] and keep(c)), key=score, default=None) for r in rows]
                decoded = np.mean([sum(keep(c) for c in r["cands"]) for r in rows])
                same = sum(p is b for p, b in zip(picks, base))
                dice = np.mean([0.0 if p is None else p["dice_low"] for p in picks])
                print(f"{tag} | {name} | {score_name} | decoded {decoded:.1f} | same pick {same}/{len(rows)} | "
                      f"Dice {dice:.4f}")


def main():
    if "--report" in sys.argv:
        return report(sys.argv[1].split(","))
    service = LiteMedSAMService("cpu")
    for tag in sys.argv[1].split(","):
        out = Path(f"/tmp/busi12/red_{tag}.pkl")
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        for ep in pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[len(rows):]:
            t = time.process_time()
            rows.append(episode(ep, service))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), len(rows[-1]["cands"]), f"{time.process_time() - t:.1f} CPU-s", flush=True)


if __name__ == "__main__":
    main()
