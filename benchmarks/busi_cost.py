"""CPU cost per image of the default 2D path (lite0 features, matching, LiteMedSAM refine), in process CPU
seconds (less sensitive than wall time to other jobs on a shared machine; report the load average with it).

    python benchmarks/busi_cost.py [--images 12] [--painted 2]

The first image pays for loading the models; the figure is the mean over the others. No cache folder: every
feature and embedding is computed, as for a new set. The default (propose and select, core/select_objects.py:
~30 candidates decoded at the decoder's own resolution in bfloat16 where native, the winner redrawn at full size)
and refine's one box per component (RefineParams(select=False)) are timed image by image, interleaved; the
time spent inside select_plane is reported too (the painted images' embeddings, computed once, are not in it).
⚠ LiteMedSAM refine inside (MedSAM's training data included public breast-ultrasound sets, possibly BUSI).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run, select_objects  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/busi")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--painted", type=int, default=2)
    parser.add_argument("--decode-ab", type=int, default=0, metavar="N",
                        help="only time the candidate decode on N images: full size float32 vs the low_res path")
    args = parser.parse_args()
    _, images, masks = load_busi(args.data)
    if args.decode_ab:
        return decode_ab(images, masks, args.decode_ab)
    picked = list(range(0, len(images), max(1, len(images) // args.images)))[: args.images]
    support = [masks[i].astype(np.uint8) if n < args.painted else np.zeros(masks[i].shape, np.uint8)
               for n, i in enumerate(picked)]
    # the default (propose and select) and refine's one box per component, each with its own caches, one image
    # after the other: both pay every image's features and embedding, under the same load
    variants = {"default (select)": SegmentationParams(device="cpu"),
                "refine, select off": SegmentationParams(device="cpu", refine=RefineParams(select=False))}
    segmenters = {}
    for name, params in variants.items():
        segmenters[name] = FewShotSegmenter(params)
        segmenters[name].set_image([images[i] for i in picked])
    seconds = {name: [] for name in variants}
    selecting = []  # CPU seconds inside select_plane (candidates, scores, the winner redrawn), default path only
    original = select_objects.select_plane

    def timed(*a, **k):
        started = time.process_time()
        try:
            return original(*a, **k)
        finally:
            selecting[-1] += time.process_time() - started

    select_objects.select_plane = timed
    loads = []
    for n in range(args.painted, len(picked)):
        for name, segmenter in segmenters.items():
            selecting.append(0.0)
            started = time.process_time()
            run(segmenter.segment(support, indices=[n]))
            seconds[name].append(time.process_time() - started)
        loads.append(os.getloadavg()[0])
    for name, values in seconds.items():
        rest = values[1:]
        print(f"{name}: CPU seconds per image: first {values[0]:.2f}, then mean {np.mean(rest):.2f} (median "
              f"{np.median(rest):.2f}) over {len(rest)} images")
    inside = selecting[0::len(variants)][1:]
    print(f"of which in select_plane (default path): mean {np.mean(inside):.2f} (median {np.median(inside):.2f})")
    print(f"load average (1 min) while measured: {min(loads):.1f}-{max(loads):.1f}")

def decode_ab(images: list, masks: list, count: int) -> None:
    """28 candidate-like boxes per image (around its lesion at 0.5-1.5 x its size, shifted) decoded by the service
    at full size (float32, 32 per call: the session-8 path) and with low_res, alternately, in CPU seconds."""
    import torch

    from napari_fewshot.core.sam_prompt import box_of
    from napari_fewshot.core.sam_service import LiteMedSAMService

    service, rng = LiteMedSAMService("cpu"), np.random.default_rng(0)
    seconds: dict[str, list[float]] = {"full size, float32": [], "low_res": []}
    for i in range(count):
        plane = images[i] / max(1.0, float(np.max(images[i])))
        embedding = service.embedding(plane)
        x0, y0, x1, y1 = box_of(masks[i].astype(bool), 0.1)
        centre, size = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array([x1 - x0, y1 - y0])
        boxes = []
        for _ in range(28):
            c, half = centre + rng.uniform(-0.5, 0.5, 2) * size, size * rng.uniform(0.25, 0.75)
            boxes.append(np.clip(np.concatenate([c - half, c + half]), 0, [plane.shape[1] - 1, plane.shape[0] - 1] * 2))
        boxes = np.asarray(boxes, np.float32)
        for name, low in (("full size, float32", False), ("low_res", True)):
            started = time.process_time()
            with torch.no_grad():
                service.decode([(embedding, boxes, None)], low_res=low)
            seconds[name].append(time.process_time() - started)
    for name, values in seconds.items():
        print(f"{name}: 28 boxes, CPU seconds per image: mean {np.mean(values):.2f} over {count} images")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
