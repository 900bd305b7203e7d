"""Every propose-and-select candidate on BUSI with cues the selection score lacks (issue 20, session 14 "rank"):
the code's own candidates (select_objects.candidates: proposals, low-resolution decode, the coarse-cover filter)
on busi_select_dump.py's episodes (/tmp/select/data), each with its full-size Dice / hit (its low-resolution
decode resized as select_plane draws a winner), the two score terms of today (contrast, likeness), LiteMedSAM's
IoU estimate, how much the other candidates agree with it (mean mask IoU with them, share with IoU > 0.5) and
its decoder stability (pixels above 0.75 over pixels above 0.25), and cues from the image and from the painted
lesions (see `cues`).

    OMP_NUM_THREADS=1 python benchmarks/busi_rank_dump.py s0_k5_n50,s1_k5_n50,s0_k20_n50,s1_k20_n50 [FIRST]
    # -> /tmp/rank/cands_TAG.pkl; then benchmarks/busi_rank_fit.py

All cues are measured at the decoder's own resolution (the plane's longer side 256), on the grey image resized
there and z-scored over the image (mean 0, sd 1), so that one image's gain does not set the scale.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busi_select_score import DATA, embedding, image, query_of  # noqa: E402
from napari_fewshot.core.proposals import decoded_masks  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.core.select_objects import (candidates, embedding_contrast, embedding_mean, full_size,  # noqa: E402
                                                low_res, ring_around)
from napari_fewshot.evaluation.busi import localisation  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.spatial import ConvexHull, QhullError  # noqa: E402

OUT = Path("/tmp/rank")


def area_resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(values, np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="area")[0, 0].numpy()


def grey(i: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image i at `size`: z-scored grey (h, w), share of saturated pixels (>= 230), share of black (<= 5)."""
    img = image(i)["image"].astype(np.float32)
    if img.ndim == 3:
        img = img.mean(-1)
    g = area_resize(img, size)
    z = (g - g.mean()) / max(g.std(), 1e-6)
    return z, area_resize(img >= 230, size), area_resize(img <= 5, size)


def cues(z: np.ndarray, bright: np.ndarray, black: np.ndarray, m: np.ndarray) -> dict:
    """Raw cues of one (h, w) bool object on a z-scored image (see module doc)."""
    h, w = m.shape
    ys, xs = np.nonzero(m)
    area = m.sum()
    inside = z[m]
    ring = ring_around(m, max(2, int(round(0.25 * np.sqrt(area)))))
    ring_mean = z[ring].mean() if ring.any() else inside.mean()
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    below = z[y1 + 1:min(h, y1 + 1 + max(2, bh // 2)), x0:x1 + 1]
    lat_rows = slice(y1 + 1, min(h, y1 + 1 + max(2, bh // 2)))
    lateral = np.concatenate([z[lat_rows, max(0, x0 - bw // 2):x0].ravel(), z[lat_rows, x1 + 1:x1 + 1 + bw // 2].ravel()])
    post = float(below.mean() - lateral.mean()) if below.size and lateral.size else 0.0
    post_vs_in = float(below.mean() - inside.mean()) if below.size else 0.0
    try:
        pts = np.concatenate([np.stack([ys, xs], 1) + d for d in ([0, 0], [0, 1], [1, 0], [1, 1])])
        solidity = float(area / max(ConvexHull(pts).volume, 1.0))
    except (QhullError, ValueError):
        solidity = 1.0
    edge = m & ~ndimage.binary_erosion(m)
    circularity = float(4 * np.pi * area / max(edge.sum(), 1) ** 2)
    band = m | ring
    return dict(int_mean=float(inside.mean()), int_p10=float(np.percentile(inside, 10)),
                int_p90=float(np.percentile(inside, 90)), int_sd=float(inside.std()),
                ring_minus_in=float(ring_mean - inside.mean()), post=post, post_vs_in=post_vs_in,
                solidity=min(solidity, 1.0), circularity=min(circularity, 2.0),
                depth=float(ys.mean() / h), top=float(y0 / h), aspect=float(np.log(bh / bw)),
                log_area=float(np.log(area / m.size)),
                border=float(y0 == 0 or x0 == 0 or y1 == h - 1 or x1 == w - 1),
                bright=float(bright[band].mean()), black=float(black[band].mean()))


def support_cues(supports: list[int]) -> list[dict]:
    out = []
    for i in supports:
        emb = embedding(i)
        m = low_res(image(i)["mask"].astype(bool), emb.resized) > 0.5
        if m.any():
            out.append(cues(*grey(i, emb.resized), m))
    return out


def episode(ep: dict, service: LiteMedSAMService) -> dict:
    q, truth, emb, coarse, margin, profile = query_of(ep)
    last = {}

    def decode(boxes, low):
        probs, quality = service.decode_with_quality([(emb, boxes, None)], low_res=low)[0]
        last.update(boxes=np.asarray(boxes).copy(), quality=np.asarray(quality).ravel())
        return probs

    boxes, masks, probs = candidates(margin, coarse, decode, profile, emb.resized, with_probabilities=True)
    z, bright, black = grey(q, emb.resized)
    margin_low = area_resize(margin, emb.resized)
    share = low_res(coarse, emb.resized)
    small = low_res(truth, emb.resized) > 0.5
    flat = np.stack([m.ravel() for m in masks]).astype(np.float32) if masks else np.zeros((0, 1), np.float32)
    inter = flat @ flat.T
    areas = flat.sum(1)
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1.0)
    np.fill_diagonal(iou, np.nan)
    rows = []
    for n, (box, m, p) in enumerate(zip(boxes, masks, probs)):
        k = int(np.flatnonzero((last["boxes"] == box).all(1))[0])
        inside = embedding_mean(emb, m)
        full = decoded_masks(box[None], full_size(p[None], truth.shape))[0]
        loc = localisation(full, truth)
        row = dict(contrast=embedding_contrast(emb, m, inside=inside), likeness=profile.likeness(inside.numpy()),
                   quality=float(last["quality"][k]), peak=float(margin_low[m].max()),
                   margin=float(margin_low[m].mean()), cover=float(share[m].sum() / max(share.sum(), 1e-9)),
                   inside=float(share[m].mean()), dice_low=localisation(m, small)["dice"],
                   dice=loc["dice"], hit=loc["hit"], fp=loc["false_positive_px"],
                   consensus=float(np.nanmean(iou[n])) if len(masks) > 1 else 1.0,
                   agree=float(np.nanmean(iou[n] > 0.5)) if len(masks) > 1 else 1.0,
                   stability=float(((p > 0.75).sum()) / max((p > 0.25).sum(), 1)))
        row.update(cues(z, bright, black, m))
        rows.append(row)
    return dict(query=q, name=image(q)["name"], cands=rows, support=support_cues(ep["supports"]),
                sup_log_area=profile.log_area)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    first = int(sys.argv[2]) if len(sys.argv) > 2 else None
    service = LiteMedSAMService("cpu")
    for tag in sys.argv[1].split(","):
        out = OUT / f"cands_{tag}.pkl"
        rows = pickle.load(open(out, "rb")) if out.exists() else []
        episodes = pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[:first]
        for ep in episodes[len(rows):]:
            started = time.process_time()
            rows.append(episode(ep, service))
            pickle.dump(rows, open(out, "wb"))
            print(tag, len(rows), rows[-1]["name"], len(rows[-1]["cands"]),
                  f"{time.process_time() - started:.1f} CPU-s", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
