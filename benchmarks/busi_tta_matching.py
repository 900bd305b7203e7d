"""How many local prototypes the support views add (core/augment.py) and what they cost the matching, per query image.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/busi_tta_matching.py [--painted 5] [--queries 20]

Painted images and queries spread over ../shared/data/busi; features computed first (not timed). Per variant: the
prototypes matched (global + local), the CPU seconds (thread time) of matching each query against every group
(cold match cache per query: a fresh key), and of the query flip's extra work (the mirrored image's lite0 pass,
its matching, the offset) — the matching only, no LiteMedSAM.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.augment import mirror_offset, unflip_scores  # noqa: E402
from napari_fewshot.core.config import RefineParams  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--painted", type=int, default=5)
parser.add_argument("--queries", type=int, default=20)
parser.add_argument("--json")
args = parser.parse_args()
names, images, masks = load_busi("../shared/data/busi")
picked = np.linspace(0, len(images) - 1, args.painted + args.queries).round().astype(int).tolist()
painted, queries = picked[::5][: args.painted], [i for i in picked if i not in picked[::5][: args.painted]]
support = [masks[i].astype(np.uint8) if i in painted else np.zeros(masks[i].shape, np.uint8) for i in range(len(images))]
out = {"load": os.getloadavg()[0]}
for view in ("none", "flip", "scale", "flip+scale"):
    seg = FewShotSegmenter(SegmentationParams(device="cpu", support_augment=view, refine=RefineParams(enabled=False)))
    seg.set_image(images)
    run(seg.compute_features(painted + queries))
    support_set = seg.parse_support(support)
    groups = seg._groups(support_set)
    cpu = []
    for q in queries:
        seg._matches.clear()
        start = time.thread_time()
        run(seg._coarse_similarity(groups, [q]))
        cpu.append(time.thread_time() - start)
    out[view] = {"prototypes": int(sum(len(g.vectors) for g in groups)), "groups": len(groups),
                 "match_cpu_s_per_query": float(np.mean(cpu))}
    print(view, out[view], flush=True)
    if view == "none":  # the query flip's extra work per query
        views = seg._views.cache(seg, "flip")
        extra = []
        for q in queries:
            start = time.thread_time()
            run(views.compute([q]))
            key = [(id(views), views.generation, q)]
            sim = next(seg._matches.class_similarities(key, [lambda: views.get(q)], groups)).numpy()
            unflip_scores(sim, mirror_offset(seg.cache.get(q), views.get(q)))
            extra.append(time.thread_time() - start)
        out["query_flip_extra_cpu_s_per_query"] = float(np.mean(extra))
        print("query flip extra", out["query_flip_extra_cpu_s_per_query"], flush=True)
out["load_after"] = os.getloadavg()[0]
print(json.dumps(out))
if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1))
