"""BUSI episodes as `evaluate busi --shots K --episodes N --seed S` draws them, each segmented by several variants
of retrieval (SegmentationParams.nearest_supports, core/nearest.py) in one process: the same episodes, features
and LiteMedSAM embeddings for every variant, run one after the other per episode (interleaved, same load).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/busi_nearest_ab.py SEED SHOTS EPISODES VARIANTS [--json F]

VARIANTS: comma-separated values of K, e.g. "0,3,5,8". K = 0 is the default path. (Session 15's variants
"K/bg=near", "K/profile=appearance|all", "K/global=all" set module switches of core/nearest.py that session 17
removed: run them at commit b2b1b32.)
Prints per variant mean Dice, hit rate, Dice on hits and CPU-s per segment() call (process time).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.evaluation.busi import localisation, localisation_summary  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seed", type=int)
    ap.add_argument("shots", type=int)
    ap.add_argument("episodes", type=int)
    ap.add_argument("variants")
    ap.add_argument("--first", type=int, default=None, help="only the first N of the drawn episodes")
    ap.add_argument("--json")
    ap.add_argument("--cache", default=None, help="feature and embedding cache folder shared by runs")
    ap.add_argument("--start", type=int, default=0, help="skip the first N drawn episodes (already scored)")
    ap.add_argument("--rank", action="store_true", help="keep Check next's ranking (its 7 decodes per image; "
                    "labels do not depend on it, so by default it is skipped here)")
    a = ap.parse_args()
    variants = a.variants.split(",")
    if not a.rank:
        import napari_fewshot.core.finishing as finishing
        finishing.rank_result = lambda *args, **kwargs: None
    names, images, masks = load_busi("../shared/data/busi")
    params = SegmentationParams(cache_dir=a.cache)
    seg = FewShotSegmenter(params)
    seg.set_image(images)
    rng = random.Random(a.seed)
    queries = rng.sample(range(len(images)), min(a.episodes, len(images)))
    rows = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    for n, query in enumerate(queries):
        supports = rng.sample([i for i in range(len(images)) if i != query], a.shots)
        if a.first is not None and n >= a.first:
            break
        if n < a.start:
            continue
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in supports:
            support[i] = masks[i].astype(np.uint8)
        line = []
        for v in (variants if n % 2 == 0 else variants[::-1]):
            k = int(v)
            seg.params = dataclasses.replace(params, nearest_supports=k)
            t = time.process_time()
            result = run(seg.segment(support, indices=[query]))
            cpu[v].append(time.process_time() - t)
            found = localisation(result.labels[query] == 1, masks[query])
            rows[v].append({"query": names[query], **found})
            line.append(f"{v}={found['dice']:.3f}")
        print(n, names[query], " ".join(sorted(line)), flush=True)
    out = {}
    for v in variants:
        s = localisation_summary(rows[v])
        out[v] = {"dice_mean": float(np.mean([r["dice"] for r in rows[v]])), **s,
                  "cpu_s_median": float(np.median(cpu[v][1:] or cpu[v])), "cpu_s_mean": float(np.mean(cpu[v][1:] or cpu[v])),
                  "cases": rows[v]}
        print(f"{v:>24}: Dice {out[v]['dice_mean']:.4f} hit {s['hit_rate']:.2f} on hits {s['dice_on_hits']:.4f} "
              f"cpu mean {out[v]['cpu_s_mean']:.2f} median {out[v]['cpu_s_median']:.2f}", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        json.dump({"seed": a.seed, "shots": a.shots, "episodes": a.episodes, "variants": out}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
