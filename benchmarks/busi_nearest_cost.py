"""CPU seconds that retrieval (SegmentationParams.nearest_supports, core/nearest.py) adds to one query image of a
BUSI 20-shot episode, without LiteMedSAM (refine off: matching and the clean-up only; features from a cache folder),
k = 0 and k = K alternating on the same episodes; and the support profiles per query (select_objects'
support_profiles of all painted images vs nearest.profiles_for, embeddings from the cache folder).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/busi_nearest_cost.py K EPISODES --cache DIR
"""
import dataclasses
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.nearest import nearest, profiles_for  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

k, episodes, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[sys.argv.index("--cache") + 1]
names, images, masks = load_busi("../shared/data/busi")
base = SegmentationParams(cache_dir=cache, refine=RefineParams(enabled=False))
seg = FewShotSegmenter(base)
seg.set_image(images)
sam = seg.sam
rng = random.Random(0)
queries = rng.sample(range(len(images)), 50)
times = {0: [], k: []}
prof = {0: [], k: []}
for n, q in enumerate(queries[:episodes]):
    sup = rng.sample([i for i in range(len(images)) if i != q], 20)
    support = [np.zeros(m.shape, np.uint8) for m in masks]
    for i in sup:
        support[i] = masks[i].astype(np.uint8)
    run(seg.segment(support, indices=[q]))  # warm: features, pooled prototypes, matches
    for kk in ([0, k] if n % 2 == 0 else [k, 0]):
        seg.params = dataclasses.replace(base, nearest_supports=kk)
        t = time.process_time()
        run(seg.segment(support, indices=[q]))
        times[kk].append(time.process_time() - t)
        targets = {i: support[i].astype(np.int16) for i in sup}
        embedding_of = lambda i: sam.embedding_of(seg.stack, i)  # noqa: E731
        t = time.process_time()
        p = profiles_for({q: nearest(seg.cache.get, q, sup, kk)} if kk else {}, targets, 1, embedding_of)
        if callable(p):
            p(q)
        prof[kk].append(time.process_time() - t)
for kk in times:
    print(f"k={kk}: segment (refine off) CPU-s mean {np.mean(times[kk]):.3f} median {np.median(times[kk]):.3f}; "
          f"profiles {np.mean(prof[kk]):.3f} ({len(times[kk])} queries)")
