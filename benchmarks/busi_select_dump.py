"""Offline data for the selection experiments (BENCHMARKS.md, "BUSI: propose and select by embedding
contrast"): per BUSI episode (drawn as `evaluate busi --episodes N --seed S` draws them) the coarse lite0 class
map, and per image its lite0 features, LiteMedSAM embedding and mask, under /tmp/select/data.

    python benchmarks/busi_select_dump.py SEED EPISODES [SHOTS]      # e.g. 0 50, then busi_select_candidates.py

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import pickle
import random
import sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.config import RefineParams
from napari_fewshot.evaluation.datasets import load_busi

seeds = [int(s) for s in sys.argv[1].split(",")]
count = int(sys.argv[2]); shots = int(sys.argv[3]) if len(sys.argv) > 3 else 5
out = Path("/tmp/select/data"); out.mkdir(parents=True, exist_ok=True)
names, images, masks = load_busi("../shared/data/busi")
params = SegmentationParams(refine=RefineParams(enabled=False), cache_dir="/tmp/busi_cache")
seg = FewShotSegmenter(params); seg.set_image(images); refiner = seg.refiner
for seed in seeds:
    params = SegmentationParams(seed=seed, refine=RefineParams(enabled=False), cache_dir="/tmp/busi_cache")
    seg.params = params
    rng = random.Random(seed)
    queries = rng.sample(range(len(images)), min(count, len(images)))
    eps = []
    for n, q in enumerate(queries):
        sup = rng.sample([i for i in range(len(images)) if i != q], shots)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in sup: support[i] = masks[i].astype(np.uint8)
        ss = seg.parse_support(support)
        run(seg.cache.compute(ss.slice_indices + [q]))
        coarse = run(seg._coarse_similarity(seg._groups(ss), [q]))[q]
        eps.append(dict(query=q, supports=sup, coarse=coarse))
        for i in [q] + sup:
            f = out / f"img_{i}.pt"
            if f.exists(): continue
            emb = refiner.service.embedding_of(seg.stack, i)
            torch.save(dict(feat=seg.cache.get(i).half().cpu(), sam=emb.features.half().cpu(), shape=emb.shape,
                            scale=emb.scale, mask=masks[i].astype(bool), image=images[i], name=names[i]), f)
        print(seed, n, names[q], flush=True)
        pickle.dump(eps, open(out / f"eps_s{seed}_k{shots}_n{count}.pkl", "wb"))
    pickle.dump(eps, open(out / f"eps_s{seed}_k{shots}_n{count}.pkl", "wb"))
