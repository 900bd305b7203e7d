"""Where the CPU seconds of one image of a BUSI image set go (issue 20's cost target), stage by stage.

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_profile.py [--images 30] [--json OUT]

The set of benchmarks/busi_cost_set.py (the same images, 3 painted, each unpainted image segmented on its own,
the first left out). Each stage's process CPU seconds (time.process_time: OpenVINO's thread included) are summed
per image by wrapping the functions that do it; nested stages are counted inside their parent too (the table says
which are parts of which). ⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets,
possibly BUSI.
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.core import features, finishing, sam_decoder, sam_prompt, sam_service, segmenter as seg_mod  # noqa: E402
from napari_fewshot.core import select_objects  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=30)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()

spent = defaultdict(float)
counts = defaultdict(int)
stage = []  # the select_plane stage a decode belongs to


def wrap(owner, name, label, counter=None):
    original = getattr(owner, name)

    def timed(*a, **k):
        start = time.process_time()
        try:
            return original(*a, **k)
        finally:
            spent[label] += time.process_time() - start
            if counter is not None:
                counts[label] += counter(*a, **k)
    setattr(owner, name, timed)


def staged(owner, name, label):
    original = getattr(owner, name)

    def inner(*a, **k):
        stage.append(label)
        try:
            return original(*a, **k)
        finally:
            stage.pop()
    setattr(owner, name, inner)


wrap(features.FeatureCache, "_encode", "lite0 features")
wrap(seg_mod, "nearest_scores", "matching (nearest_scores)")
wrap(sam_service.LiteMedSAMService, "_compute", "LiteMedSAM image encoder (+ input)")
wrap(sam_prompt.BoxPrompter, "to_input", "  of it: input resize/normalise")
wrap(select_objects, "select_planes", "selection (select_planes, all)")
wrap(select_objects, "selection_score", "  of it: selection_score (contrast + likeness)")
wrap(select_objects, "propose_boxes", "  of it: propose_boxes")
wrap(select_objects, "decoded_masks", "  of it: decoded_masks")
wrap(select_objects, "full_size", "  of it: full_size")
wrap(finishing, "rank_result", "Check next (rank_result)")
wrap(finishing, "finish_result", "finish_result (clean-up + rank)")
original_call = sam_decoder.OpenVINODecoder.__call__


def decoder_call(self, image, sparse, dense, index=None, window=None):
    start = time.process_time()
    try:
        return original_call(self, image, sparse, dense, index, window)
    finally:
        label = f"decoder calls: {stage[-1] if stage else 'other'}"
        spent[label] += time.process_time() - start
        counts[label] += int(sparse.shape[0])
        if window is not None:
            spent[label + " cells"] += (window[1] - window[0]) * (window[3] - window[2]) * int(sparse.shape[0])


sam_decoder.OpenVINODecoder.__call__ = decoder_call
original_chunk = sam_prompt.BoxPrompter._decode_chunk


def chunk(self, *a, **k):
    start = time.process_time()
    try:
        return original_chunk(self, *a, **k)
    finally:
        spent[f"_decode_chunk: {stage[-1] if stage else 'other'}"] += time.process_time() - start


sam_prompt.BoxPrompter._decode_chunk = chunk
staged(select_objects, "candidates", "candidates")
staged(select_objects, "refit", "refit")
staged(finishing, "rank_result", "check next")

names, images, masks = load_busi(args.data)
picked = np.linspace(0, len(images) - 1, min(args.images, len(images))).round().astype(int).tolist()
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
segmenter.set_image([images[i] for i in picked])
rows = []
for n in range(args.painted, len(picked)):
    spent.clear()
    counts.clear()
    cpu = time.process_time()
    run(segmenter.segment(support, indices=[n]))
    cpu = time.process_time() - cpu
    rows.append(dict(image=names[picked[n]], shape=list(images[picked[n]].shape[:2]), cpu_s=cpu,
                     load=os.getloadavg()[0], **{k: v for k, v in spent.items()},
                     **{f"n {k}": v for k, v in counts.items()}))
    print(n, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
rest = rows[1:]
keys = sorted({k for r in rest for k in r if k not in ("image", "shape", "load")})
summary = {k: float(np.mean([r.get(k, 0.0) for r in rest])) for k in keys}
print(json.dumps(summary, indent=1))
print("load", min(r["load"] for r in rest), max(r["load"] for r in rest))
if args.json:
    Path(args.json).write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
