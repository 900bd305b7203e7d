"""Where the coarse BUSI prediction sits against the lesion: the shift that best aligns them, across patients.

Few-shot episodes as `napari-fewshot evaluate busi` draws them (a query, K supports of other patients), the
prototype result only (no LiteMedSAM refinement, which redraws from boxes and hides a small offset). For each
query whose prediction overlaps the lesion, the (dy, dx) in whole input pixels (the encoder's 384-px input)
that maximises the Dice of the moved prediction against the reference. A feature grid centred where the
rest of the code assumes gives a median near (0, 0); a grid off by a few pixels shows it here, in every image.

    python benchmarks/grid_offset.py [--grid native|centred] [--shots 5 --episodes 40 --seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

SEARCH = 16  # input pixels each way


def moved(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """mask (H, W) bool moved by (dy, dx) pixels, zeros let in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


def best_shift(prediction: np.ndarray, truth: np.ndarray, scale: float) -> tuple[float, float, float]:
    """(dy, dx, gain): the move (in input pixels, searched on a 1-px input grid) of `prediction` that best fits
    `truth`, and the Dice it gains over not moving; moves are made in image pixels (scale: image px per input px)."""
    steps = range(-SEARCH, SEARCH + 1)
    scores = {(dy, dx): dice(moved(prediction, round(dy * scale), round(dx * scale)), truth)
              for dy in steps for dx in steps}
    (dy, dx), top = max(scores.items(), key=lambda kv: kv[1])
    return -dy, -dx, top - scores[(0, 0)]  # where the prediction sits relative to the lesion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/busi")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="native", choices=["native", "centred"], help="SegmentationParams.feature_grid")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    params = SegmentationParams(seed=args.seed, feature_grid=args.grid)
    params = replace(params, refine=replace(params.refine, enabled=False))
    names, images, masks = load_busi(args.data)
    rng = random.Random(args.seed)
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(images)
    rows, every = [], []
    for query in rng.sample(range(len(images)), args.episodes):
        supports = rng.sample([i for i in range(len(images)) if i != query], args.shots)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in supports:
            support[i] = masks[i].astype(np.uint8)
        prediction = run(segmenter.segment(support, indices=[query])).labels[query] == 1
        truth = masks[query] > 0
        score = dice(prediction, truth)
        every.append(score)
        if score < 0.2:
            continue
        scale = max(truth.shape) / params.image_input_size
        dy, dx, gain = best_shift(prediction, truth, scale)
        rows.append({"query": names[query], "dice": round(score, 4), "dy": dy, "dx": dx, "gain": round(gain, 4)})
        print(f"{names[query]}: Dice {score:.3f}, sits ({dy:+d}, {dx:+d}) input px from the lesion, +{gain:.3f} moved")
    dys, dxs = np.array([r["dy"] for r in rows]), np.array([r["dx"] for r in rows])
    summary = {"queries": len(rows), "median_dy": float(np.median(dys)), "median_dx": float(np.median(dxs)),
               "mean_dy": float(dys.mean()), "mean_dx": float(dxs.mean()),
               "mean_dice": float(np.mean([r["dice"] for r in rows])),
               "mean_gain": float(np.mean([r["gain"] for r in rows])), "episodes": len(every),
               "mean_dice_every_episode": float(np.mean(every))}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows, "config": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
