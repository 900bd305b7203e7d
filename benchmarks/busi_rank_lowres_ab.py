"""Check next's LiteMedSAM signs (core/uncertainty.box_signs: box stability and LiteMedSAM's IoU estimate) decoded
at full size in float32 vs at the decoder's own resolution (LiteMedSAMService.decode_with_quality(low_res=True),
bfloat16 where native), on the same predictions: how close are the scores and the order, and the CPU seconds.

    python benchmarks/busi_rank_lowres_ab.py [--images 22] [--painted 4]

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run  # noqa: E402
from napari_fewshot.core import uncertainty as U  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=22)
parser.add_argument("--painted", type=int, default=4)
parser.add_argument("--data", default="../shared/data/busi")
args = parser.parse_args()
_, images, masks = load_busi(args.data)
picked = list(range(1, len(images), max(1, len(images) // args.images)))[: args.images]
support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
           for n, i in enumerate(picked)]
seg = FewShotSegmenter(SegmentationParams(device="cpu"))
seg.set_image([images[i] for i in picked])
result = run(seg.segment(support))
service, stack = seg.refiner.service, seg.stack
free = [n for n in range(len(picked)) if n >= args.painted and np.any(result.labels[n])]
signs, seconds = {}, {}
for low in (False, True, False, True):
    name = "low_res" if low else "full size"
    started = time.process_time()
    signs[name] = {n: U.box_signs(result.labels[n], lambda b, n=n: service.decode_with_quality(
        [(service.embedding_of(stack, n), b, None)], low_res=low)[0], seed=n) for n in free}
    seconds.setdefault(name, []).append((time.process_time() - started) / len(free))
truth = {n: 1 - dice(np.asarray(result.labels[n]) != 0, masks[picked[n]]) for n in free}
sizes = U.support_sizes([result.labels[n] for n in range(args.painted)])
score = {}
for name, s in signs.items():
    coarse = result.similarity  # not needed: image_error's other signs are the same for both; compare the LiteMedSAM part
    stab = np.array([s[n][0] for n in free]); qual = np.array([s[n][1] for n in free])
    score[name] = (stab, qual)
    print(f"{name}: CPU-s per image for the 7 boxes {np.mean(seconds[name]):.2f}; stability mean {stab.mean():.3f}, "
          f"quality mean {qual.mean():.3f}; Spearman(1 - quality, 1 - Dice) {spearmanr(1 - qual, [truth[n] for n in free])[0]:.2f}")
(fs, fq), (ls, lq) = score["full size"], score["low_res"]
print(f"{len(free)} predicted images: |stability diff| max {np.abs(fs - ls).max():.3f} mean {np.abs(fs - ls).mean():.3f}; "
      f"|quality diff| max {np.abs(fq - lq).max():.3f} mean {np.abs(fq - lq).mean():.3f}; "
      f"Spearman full vs low: stability {spearmanr(fs, ls)[0]:.3f}, quality {spearmanr(fq, lq)[0]:.3f}")
print(f"load average {os.getloadavg()}")
