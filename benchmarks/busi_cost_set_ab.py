"""busi_cost_set.py's 100-image set, two versions of the image-set selection in one process, image by image
alternately (ABBA order, the same load for both): CPU seconds per image after the first, and each version's
Dice against the reference masks (the same painted images, each other image segmented on its own).

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_set_ab.py OLD_SELECT_MODULE [--images 100] [--painted 3]
        [--measure N] [--json OUT]

--measure N: segment only N of the unpainted images, spread evenly (the set stays `--images` large; its size
does not change an image's cost, BENCHMARKS.md session 11); default all.

OLD_SELECT_MODULE: a previous core/select_objects.py with absolute imports, e.g.
(git show main:napari_fewshot/core/select_objects.py | sed 's/^from \\.\\([a-z_]*\\) import/from napari_fewshot.core.\\1 import/;
 s/^    from \\.predict import/    from napari_fewshot.core.predict import/'); "after" is this tree's module.
No cache folder: every image's lite0 features and LiteMedSAM embedding are computed by each segmenter.
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run, select_objects  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("old")
parser.add_argument("--images", type=int, default=100)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--measure", type=int)
parser.add_argument("--json")
args = parser.parse_args()
spec = importlib.util.spec_from_file_location("select_old", args.old)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
versions = {"before": (old.select_planes, old.support_profiles),
            "after": (select_objects.select_planes, select_objects.support_profiles)}
names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, min(args.images, len(images))).round().astype(int).tolist()
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
segmenters = {name: FewShotSegmenter(SegmentationParams(device="cpu")) for name in versions}
for segmenter in segmenters.values():
    segmenter.set_image([images[i] for i in picked])
rows = []
unpainted = list(range(args.painted, len(picked)))
if args.measure:
    unpainted = [unpainted[int(k)] for k in np.linspace(0, len(unpainted) - 1, args.measure).round()]
for step, n in enumerate(unpainted):
    order = list(versions) if step % 2 == 0 else list(versions)[::-1]
    row = dict(image=names[picked[n]])
    labels = {}
    for name in order:
        select_objects.select_planes, select_objects.support_profiles = versions[name]
        cpu, wall = time.process_time(), time.perf_counter()
        result = run(segmenters[name].segment(support, indices=[n]))
        row[name] = dict(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)
        labels[name] = np.asarray(result.labels[n]) != 0
        truth = masks[picked[n]].astype(bool)
        row[name]["dice"] = float(2 * (labels[name] & truth).sum() / max(labels[name].sum() + truth.sum(), 1))
    row["same_labels"] = bool(np.array_equal(labels["before"], labels["after"]))
    row["load"] = os.getloadavg()[0]
    rows.append(row)
    print(n, json.dumps(row), flush=True)
rest = rows[1:]
summary = dict(images=len(picked), painted=args.painted, measured=len(rest),
               load_min=min(r["load"] for r in rest), load_max=max(r["load"] for r in rest),
               same_labels=sum(r["same_labels"] for r in rest))
for name in versions:
    cpu = np.array([r[name]["cpu_s"] for r in rest])
    summary[name] = dict(cpu_mean=float(cpu.mean()), cpu_median=float(np.median(cpu)),
                         cpu_p90=float(np.quantile(cpu, 0.9)), cpu_max=float(cpu.max()), over_2s=int((cpu > 2).sum()),
                         wall_mean=float(np.mean([r[name]["wall_s"] for r in rest])),
                         dice_mean=float(np.mean([r[name]["dice"] for r in rows])),
                         first_cpu_s=rows[0][name]["cpu_s"])
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
