"""This branch against main's path, on busi_cost_set.py's image set, in one process, image by image (issue 20 cost;
session 19, helper "cost"). "main": the low-resolution decodes
upscale the whole resized frame (core/sam_service.LOW_RES_INSIDE False) and the support's label values come from
np.unique (core/support.label_values replaced by it); "this": both as this tree has them. Two segmenters on the same set (each computes its own features and embeddings), the
switch set before each image's segment(..., indices=[n]), ABBA order, every `--every`-th unpainted image; process
CPU seconds per image, whether both gave the same labels and the same Check next estimate.

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_window_ab.py [--images 30] [--every 1] [--json OUT]
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run, sam_service, support as support_mod  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=30)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--every", type=int, default=1)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()
names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, min(args.images, len(images))).round().astype(int).tolist()
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
sides = {"whole": (False, np.unique), "window": (True, support_mod.label_values)}
segmenters = {}
for side in sides:
    segmenters[side] = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenters[side].set_image([images[i] for i in picked])
rows = []
for k, n in enumerate(range(args.painted, len(picked), args.every)):
    order = list(sides) if k % 2 == 0 else list(sides)[::-1]
    row = dict(image=names[picked[n]])
    labels = {}
    for side in order:
        sam_service.LOW_RES_INSIDE, support_mod.label_values = sides[side]
        cpu, wall = time.process_time(), time.perf_counter()
        result = run(segmenters[side].segment(support, indices=[n]))
        row[side] = time.process_time() - cpu
        row[side + "_wall"] = time.perf_counter() - wall
        labels[side] = np.asarray(result.labels[n])
        row[side + "_error"] = result.uncertainty.get(n)
    row.update(load=os.getloadavg()[0], predicted=bool(labels["window"].any()),
               same_labels=bool(np.array_equal(labels["whole"], labels["window"])),
               same_error=row["whole_error"] == row["window_error"])
    rows.append(row)
    print(k, json.dumps(row), flush=True)
rest = rows[1:]  # the first: models loading, the painted images' features and embeddings
summary = dict(images=len(picked), painted=args.painted, measured=len(rest),
               load_min=min(r["load"] for r in rest), load_max=max(r["load"] for r in rest),
               same_labels=sum(r["same_labels"] for r in rest), same_error=sum(r["same_error"] for r in rest),
               window_cheaper=sum(r["window"] < r["whole"] for r in rest),
               paired_mean=float(np.mean([r["window"] - r["whole"] for r in rest])),
               paired_median=float(np.median([r["window"] - r["whole"] for r in rest])))
for side in sides:
    cpu = np.array([r[side] for r in rest])
    summary[side] = dict(cpu_mean=float(cpu.mean()), cpu_median=float(np.median(cpu)),
                         cpu_p90=float(np.quantile(cpu, 0.9)), cpu_max=float(cpu.max()),
                         over_2s=int((cpu > 2).sum()), wall_mean=float(np.mean([r[side + "_wall"] for r in rest])))
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
