"""CPU time of each local-prototype subsample (core/subsample.py) on real BUSI images' lite0 features (issue 20;
session 22, helper "sample"): per painted image, once (the group is then cached; a correction pools one image).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/busi_sample_cost.py [--images 10] [--json OUT]

The images are spread evenly over the folder; each is pooled with its reference mask (pool_slice), then
prototypes.capped_local runs with each sampling at the default cap (thread CPU-s, best of 3).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams  # noqa: E402
from napari_fewshot.core.prototypes import capped_local, pool_slice  # noqa: E402
from napari_fewshot.core.subsample import SAMPLINGS  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=10)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()
names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, args.images).round().astype(int).tolist()
params = SegmentationParams(device="cpu")
segmenter = FewShotSegmenter(params)
segmenter.set_image([images[i] for i in picked])
cap = params.image_max_local_prototypes
rows = []
for n, i in enumerate(picked):
    piece = pool_slice(segmenter.cache.get(n), torch.from_numpy(masks[i].astype(np.int64)), 1)
    row = dict(image=names[i], cells=[int((piece.local_owner == k).sum()) for k in (0, 1)],
               channels=int(piece.local_vectors.shape[1]))
    for how in SAMPLINGS:
        best = 1e9
        for _ in range(3):
            t = time.thread_time()
            capped_local(piece, 1, cap, 0, n, how)
            best = min(best, time.thread_time() - t)
        row[how] = round(best * 1000, 1)
    rows.append(row)
    print(row, flush=True)
summary = {how: round(float(np.mean([r[how] for r in rows])), 1) for how in SAMPLINGS}
summary.update(load=os.getloadavg()[0], cap=cap, unit="ms per painted image")
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
