"""CPU seconds per image of the default 2D path on an image set of ~100 BUSI images (issue 20's cost target:
<= 2 s per image on the 2-core CPU for a 100-image set, after the first).

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_set.py [--images 100] [--painted 3] [--json OUT] [--check-next MODE]
                                                          [--labels OUT.npz]
                                                          [--refit on|off] [--low-res-prompts N] [--grow on|off]
                                                          [--support-augment flip|scale|flip+scale] [--query-flip]
                                                          [--image-local-sampling random|grid|fps|kmeans]
                                                          [--encoder NAME]

The images are spread evenly over the folder (benign and malignant); the first `painted` are painted with their
reference masks. No cache folder: each image's lite0 features and LiteMedSAM embedding are computed as for a new
set. Each unpainted image is segmented on its own (segment(..., indices=[n]): features, matching, propose and
select, Check next's signs), its process CPU time and wall time recorded; the first is left out (models loading,
the painted images' features and embeddings). Load average recorded per image.
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
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=100)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
parser.add_argument("--check-next", help="core/uncertainty.CHECK_NEXT for this run (default: the code's)")
parser.add_argument("--refit", choices=("on", "off"), help="core/select_objects.REFIT: off = () (default: the code's)")
parser.add_argument("--grow", choices=("on", "off"),
                    help="core/select_objects.GROWING (session 19's growing round) for this run (default: the code's)")
parser.add_argument("--low-res-prompts", type=int,
                    help="core/sam_service.LOW_RES_PROMPTS: candidates per decoder call (default: the code's)")
parser.add_argument("--support-augment", default="none", help="SegmentationParams.support_augment (core/augment.py)")
parser.add_argument("--query-flip", action="store_true", help="SegmentationParams.query_flip (core/augment.py)")
parser.add_argument("--image-local-sampling", default="random",
                    help="SegmentationParams.image_local_sampling (core/subsample.py)")
parser.add_argument("--encoder", default="auto", help="SegmentationParams.encoder (auto: the default)")
parser.add_argument("--labels", help="an .npz to save each measured image's labels in (to compare two runs)")
args = parser.parse_args()
if args.check_next:
    from napari_fewshot.core import uncertainty

    uncertainty.CHECK_NEXT = args.check_next
from napari_fewshot.core import select_objects  # noqa: E402

if args.refit == "off":
    select_objects.REFIT = ()
if args.grow:
    select_objects.GROWING = args.grow == "on"
if args.low_res_prompts:
    from napari_fewshot.core import sam_service

    sam_service.LOW_RES_PROMPTS = args.low_res_prompts
refit_cpu = [0.0]  # CPU seconds inside select_objects.refit (the second round of propose and select), this image
_refit = select_objects.refit


def timed_refit(*a, **k):
    start = time.process_time()
    try:
        return _refit(*a, **k)
    finally:
        refit_cpu[0] += time.process_time() - start


select_objects.refit = timed_refit
grow_cpu = [0.0]  # CPU seconds inside select_objects.grow (the growing rounds), this image
_grow = select_objects.grow


def timed_grow(*a, **k):
    start = time.process_time()
    try:
        return _grow(*a, **k)
    finally:
        grow_cpu[0] += time.process_time() - start


select_objects.grow = timed_grow
names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, min(args.images, len(images))).round().astype(int).tolist()
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
segmenter = FewShotSegmenter(SegmentationParams(device="cpu", encoder=args.encoder,
                                                support_augment=args.support_augment, query_flip=args.query_flip,
                                                image_local_sampling=args.image_local_sampling))
segmenter.set_image([images[i] for i in picked])
rows, labels = [], {}
for n in range(args.painted, len(picked)):
    refit_cpu[0] = grow_cpu[0] = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    result = run(segmenter.segment(support, indices=[n]))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rows.append(dict(image=names[picked[n]], cpu_s=cpu, wall_s=wall, refit_cpu_s=refit_cpu[0], grow_cpu_s=grow_cpu[0],
                     load=os.getloadavg()[0],
                     predicted=bool(np.asarray(result.labels[n]).any())))
    labels[names[picked[n]]] = np.asarray(result.labels[n])
    print(n, rows[-1], flush=True)
rest = rows[1:]
cpu = np.array([r["cpu_s"] for r in rest])
wall = np.array([r["wall_s"] for r in rest])
summary = dict(images=len(picked), painted=args.painted, measured=len(rest), cpu_mean=float(cpu.mean()),
               cpu_median=float(np.median(cpu)), cpu_p90=float(np.quantile(cpu, 0.9)), cpu_max=float(cpu.max()),
               over_2s=int((cpu > 2).sum()), wall_mean=float(wall.mean()),
               load_min=min(r["load"] for r in rest), load_max=max(r["load"] for r in rest),
               first_cpu_s=rows[0]["cpu_s"], check_next=args.check_next,
               support_augment=args.support_augment, query_flip=args.query_flip,
               image_local_sampling=args.image_local_sampling, encoder=args.encoder,
               refit_cpu_mean=float(np.mean([r["refit_cpu_s"] for r in rest])),
               grow_cpu_mean=float(np.mean([r["grow_cpu_s"] for r in rest])),
               grow=dict(GROWING=select_objects.GROWING, GROW=select_objects.GROW, GROW_SIDES=select_objects.GROW_SIDES,
                         GROW_CORE=select_objects.GROW_CORE, GROW_ROUNDS=select_objects.GROW_ROUNDS))
print(json.dumps(summary))
if args.labels:
    np.savez_compressed(args.labels, **labels)
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
