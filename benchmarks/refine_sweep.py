"""Variants of the refinement on BUSI episodes, without re-running the prototypes for each variant.

    python benchmarks/refine_sweep.py [--shots 5] [--episodes 50] [--seed 0] [--encoder efficientnet-lite0]
        [--cache-dir /tmp/fewshot-bench-cache] [--out benchmarks/results/litemedsam/sweep_busi5_seed0.json]

The coarse labels of each episode (prototype matching, no clean-up, no refinement) are computed once, as
`napari-fewshot evaluate busi` draws them (same seeds); each variant then refines them (LiteMedSAM
embeddings from the shared cache folder) and keeps the largest component per image, the 2D clean-up.
Variants: box margin, mask prompt, the implausibility guard, and "largest first" (the clean-up before
the refinement, so only the kept component is prompted).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, dice, run
from napari_fewshot.core.postprocess import keep_largest_per_image
from napari_fewshot.core.refine import refine_plane
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.evaluation.datasets import load_busi

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "margin0.1": {},
    "margin0.05": {"margin": 0.05},
    "margin0.2": {"margin": 0.2},
    "mask_prompt": {"mask_prompt": True},
    "growth2": {"max_growth": 2.0},
    "growth10": {"max_growth": 10.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--cache-dir", default="/tmp/fewshot-bench-cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    names, images, masks = load_busi(Path(args.data) / "busi")
    params = SegmentationParams(encoder=args.encoder, cache_dir=args.cache_dir, seed=args.seed,
                                refine=RefineParams(enabled=False),
                                postprocess=False)
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(images)
    rng = random.Random(args.seed)  # drawn exactly as evaluation/busi.py draws them
    queries = rng.sample(range(len(images)), min(args.episodes, len(images)))
    coarse = {}
    for query in queries:
        supports = rng.sample([i for i in range(len(images)) if i != query], args.shots)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in supports:
            support[i] = masks[i].astype(np.uint8)
        coarse[query] = run(segmenter.segment(support, indices=[query])).labels[query]
    cache = LiteMedSAMService("cpu", 1 << 30, args.cache_dir)
    stack = segmenter.cache.stack

    def decoder(i):
        def decode(boxes, prompts):
            return cache.decode([(cache.embedding_of(stack, i), boxes, prompts)])[0]
        return decode

    def score(planes: dict[int, np.ndarray]) -> float:
        labels = [np.zeros(m.shape, np.uint8) for m in masks]
        for i, plane in planes.items():
            labels[i] = plane.copy()
        keep_largest_per_image(labels, [1], list(planes))
        return float(np.mean([dice(labels[i] == 1, masks[i]) for i in planes]))

    report = {"coarse (largest component)": score(coarse)}
    largest = {}
    for i, plane in coarse.items():
        labels = [np.zeros(m.shape, np.uint8) for m in masks]
        labels[i] = plane.copy()
        keep_largest_per_image(labels, [1], [i])
        largest[i] = labels[i]
    base = RefineParams(enabled=True)
    for name, change in VARIANTS.items():
        variant = replace(base, **change)
        report[name] = score({i: refine_plane(p, [1], decoder(i), variant) for i, p in coarse.items()})
        report[f"{name}, largest first"] = score({i: refine_plane(p, [1], decoder(i), variant)
                                                  for i, p in largest.items()})
        print(name, report[name], report[f"{name}, largest first"], flush=True)
    report["config"] = vars(args) | {"embeddings_computed": cache.computed,
                                     "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out or ROOT / "benchmarks" / "results" / "litemedsam" /
               f"sweep_busi{args.shots}_seed{args.seed}_{args.encoder}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
