"""Re-segmenting after a correction with refinement on: how many boxes LiteMedSAM decodes again, and what the
refined labels lose, for several box-reuse rules side by side in one process (issue 21 item 3).

    python benchmarks/resegment_levers.py [--scan ct|N] [--corrections 4] [--variants exact,shift=1,shift=2]
                                          [--json OUT]

One segmenter of this checkout (coarse result as the window gets it, ``segment(..., refine_later=True)``),
one LiteMedSAM service (embeddings shared), and one Refiner per variant, each keeping its own decoded boxes
from Segment all through every correction:
  exact      RefineParams() (reuse_shift 0: a box is reused only when bit-identical; its labels are a fresh
             refinement's, bit for bit),
  shift=S    RefineParams(reuse_shift=S) (a box whose corners moved by <= S px of LiteMedSAM's 256-px input
             reuses the kept decode),
  changed=C  RefineParams(reuse_changed=C) (a component differing from one decoded on its slice by <= C of its
             pixels reuses that decode),
  snap=G     boxes snapped outward to a grid of G px of the 256-px input (every run, Segment all too), exact reuse;
  A+B        both (e.g. snap=4+shift=2, shift=2+changed=0.05).
Per correction and variant: CPU seconds of ``refine_result(coarse, first=[z])`` (re-decode, clean-up, ranking),
of it LiteMedSAM's decoder, its image encoder (embeddings computed) and the clean-up + ranking; boxes decoded,
Dice of the refined labels against the reference (per class, then mean) and against the exact
variant's labels (a fresh refinement's). Also: for the exact variant, how far each decoded box is from the
nearest box kept on its slice (px of the 256-px input), the distribution lever "shift" acts on.
--scan as benchmarks/resegment_ab.py (the CT sample: liver and spleen on 2 slices; N: the tiled 512 x 512 CT).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import napari_fewshot.core.refine as refine_module  # noqa: E402
from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.refine import Refiner  # noqa: E402
from napari_fewshot.core.sam_prompt import SIDE, box_of  # noqa: E402


def snapped_box_of(grid: float):
    """box_of with the box snapped outward to a grid of `grid` px of LiteMedSAM's 256-px input."""
    def snapped(mask, margin=0.1):
        box = box_of(mask, margin)
        if box is None:
            return None
        step = grid * max(mask.shape) / SIDE
        h, w = mask.shape
        x0, y0 = np.floor(box[:2] / step) * step
        x1, y1 = np.ceil(box[2:] / step) * step
        return np.array([max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)], np.float32)
    return snapped


def parse_variant(text: str) -> dict:
    out = {"name": text, "shift": 0.0, "snap": 0.0, "changed": 0.0}
    for part in text.split("+"):
        if not part.startswith("exact"):  # exact, or exact#2 for a second exact refiner
            key, value = part.split("=")
            out[key] = float(value)
    return out


def dice_per_class(a: np.ndarray, b: np.ndarray, classes) -> list[float]:
    out = []
    for c in classes:
        x, y = a == c, b == c
        total = x.sum() + y.sum()
        out.append(1.0 if total == 0 else float(2 * (x & y).sum() / total))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="ct")
    parser.add_argument("--corrections", type=int, default=4)
    parser.add_argument("--variants", default="exact,shift=1,shift=2,shift=3")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from resegment_gui import scan

    ct = args.scan == "ct"
    volume, truth, painted, organ = scan("ct" if ct else "tiled", 0 if ct else int(args.scan))
    classes = [int(c) for c in np.unique(truth) if c]
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    base = SegmentationParams(cache_dir=tempfile.mkdtemp(prefix="fewshot-levers-"), device="cpu")
    seg = FewShotSegmenter(base)
    seg.set_image(volume)
    run(seg.compute_features())
    variants = [parse_variant(v) for v in args.variants.split(",")]
    assert variants[0]["name"] == "exact", "the first variant is the reference: exact"
    counts = {"prompts": 0, "decode_cpu": 0.0, "embed_cpu": 0.0, "embedded": 0, "finish_cpu": 0.0}
    real_decode, real_compute = seg.sam.decode, seg.sam._compute

    def timing(job, key, count=None):
        def timed(*a, **k):
            cpu = time.process_time()
            try:
                return job(*a, **k)
            finally:
                counts[key] += time.process_time() - cpu
                if count:
                    counts[count] += 1
        return timed

    def counting_decode(requests, *a, **k):
        counts["prompts"] += sum(len(boxes) for _, boxes, _ in requests)
        return real_decode(requests, *a, **k)

    seg.sam.decode = timing(counting_decode, "decode_cpu")
    seg.sam._compute = timing(real_compute, "embed_cpu", "embedded")
    moves: list[float] = []
    refiners = {}
    for v in variants:
        params = dataclasses.replace(base, refine=RefineParams(enabled=True, reuse_shift=v["shift"],
                                                                        reuse_changed=v["changed"]))
        refiners[v["name"]] = (params, Refiner(params, seg.sam))
    exact_boxes = refiners["exact"][1].boxes
    real_get = exact_boxes.get

    def recording_get(index, box, shape, *a):
        found = real_get(index, box, shape, *a)
        kept = exact_boxes._parts.get(index)
        if found is None and kept:
            moves.append(min(float(np.abs(b - box).max()) for b, _, _ in kept.values()) * SIDE / max(shape))
        return found

    exact_boxes.get = recording_get

    def refine_with(v, coarse, first):
        params, refiner = refiners[v["name"]]
        seg.params, seg._refiner = params, refiner
        refine_module.box_of = snapped_box_of(v["snap"]) if v["snap"] else box_of
        coarse.refinement.finish = timing(finish, "finish_cpu")
        before, cpu, start = dict(counts), time.process_time(), time.perf_counter()
        try:
            final = run(seg.refine_result(coarse, first=first))
        finally:
            refine_module.box_of = box_of
        split = {k: round(counts[k] - before[k], 2) for k in ("decode_cpu", "embed_cpu", "embedded", "finish_cpu")}
        return final, round(time.process_time() - cpu, 2), round(time.perf_counter() - start, 2), \
            counts["prompts"] - before["prompts"], split

    report = {"scan": list(volume.shape), "variants": [v["name"] for v in variants], "rounds": []}
    candidates = [z for z in organ if z not in painted]
    picks = candidates[:: max(1, len(candidates) // args.corrections)][:args.corrections]
    for n, z in enumerate([None] + picks):
        if z is not None:
            support[z] = truth[z]
        seg.params, seg._refiner = refiners["exact"]
        cpu0 = time.process_time()
        coarse = run(seg.segment(support, refine_later=True))
        finish = coarse.refinement.finish
        row = {"corrected": z, "coarse_cpu_s": round(time.process_time() - cpu0, 2),
               "load": round(os.getloadavg()[0], 1)}
        labels = {}
        for v in (variants if n % 2 == 0 else [variants[0]] + variants[1:][::-1]):
            final, cpu, wall, boxes, split = refine_with(v, coarse, [] if z is None else [z])
            labels[v["name"]] = np.asarray(final.labels)
            row[v["name"]] = {"cpu_s": cpu, "wall_s": wall, "boxes": boxes, **split,
                              "dice_ref": dice_per_class(labels[v["name"]], truth, classes)}
        for v in variants:
            row[v["name"]]["dice_exact"] = dice_per_class(labels[v["name"]], labels["exact"], classes)
            row[v["name"]]["mean_dice_ref"] = float(np.mean(row[v["name"]]["dice_ref"]))
        row["exact_moves_px256"] = ({q: round(float(np.percentile(moves, q)), 2) for q in (10, 25, 50, 75, 90)}
                                    if moves else {})
        moves.clear()
        report["rounds"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
