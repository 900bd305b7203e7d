"""Check next's ranking rule A/B on busi_cost_set.py's 100-image set, in one process, image by image (issue 20
cost; session 16, helper "cost"): two segmenters on the same set (each computes its own features and embeddings),
core/uncertainty.CHECK_NEXT set to A's or B's rule before each image's segment(..., indices=[n]), ABBA order, every
`--every`-th unpainted image; process CPU seconds per image, and whether both gave the same labels.

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_check_next_ab.py [--a signs] [--b estimate] [--every 2] --json OUT
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
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.core import uncertainty  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=100)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--every", type=int, default=2)
parser.add_argument("--a", default="signs")
parser.add_argument("--b", default="estimate")
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()
names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, min(args.images, len(images))).round().astype(int).tolist()
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
segmenters = {}
for mode in (args.a, args.b):
    segmenters[mode] = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenters[mode].set_image([images[i] for i in picked])
rows = []
for k, n in enumerate(range(args.painted, len(picked), args.every)):
    order = (args.a, args.b) if k % 2 == 0 else (args.b, args.a)
    row = dict(image=names[picked[n]])
    labels = {}
    for mode in order:
        uncertainty.CHECK_NEXT = mode
        cpu = time.process_time()
        result = run(segmenters[mode].segment(support, indices=[n]))
        row[mode] = time.process_time() - cpu
        labels[mode] = np.asarray(result.labels[n])
        row[mode + "_error"] = result.uncertainty.get(n)
    row.update(load=os.getloadavg()[0], same_labels=bool(np.array_equal(labels[args.a], labels[args.b])))
    rows.append(row)
    print(k, row, flush=True)
rest = rows[1:]  # the first: models loading, the painted images' features and embeddings
summary = dict(images=len(picked), painted=args.painted, measured=len(rest), a=args.a, b=args.b,
               load_min=min(r["load"] for r in rest), load_max=max(r["load"] for r in rest),
               same_labels=sum(r["same_labels"] for r in rest),
               b_cheaper=sum(r[args.b] < r[args.a] for r in rest))
for mode in (args.a, args.b):
    cpu = np.array([r[mode] for r in rest])
    summary[mode] = dict(cpu_mean=float(cpu.mean()), cpu_median=float(np.median(cpu)),
                         cpu_p90=float(np.quantile(cpu, 0.9)), cpu_max=float(cpu.max()), over_2s=int((cpu > 2).sum()))
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
