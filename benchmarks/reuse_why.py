"""Why each box is decoded again after a window correction, and what a box-reuse rule saves and costs
(issue 21 item 3): the window's correction sequence of benchmarks/resegment_gui.py through the API, one
Refiner per reuse rule, side by side in one process.

    python benchmarks/reuse_why.py [--scan ct|N] [--variants "default;reuse_changed=0;reuse_pixels=40"]
                                   [--json OUT]

As resegment_gui.py does it: liver and spleen (CT sample; --scan N: the tiled 512 x 512 CT, N slices, liver)
painted on its slices, Segment all refined, then 6 corrections (the reference of one more organ slice into the
support and a 7-pixel diagonal stroke of class 1 over its liver), alternating: a window correction (coarse
``segment(..., refine_later=True)``, then ``refine_result(coarse, first=[z])``, then the embeddings ahead, as the
window's quiet job) and an API correction (coarse only, no refinement). One segmenter, one LiteMedSAM service
(embeddings shared), one Refiner per variant (each keeps its own decodes from Segment all on); a variant is a
";"-separated list item of RefineParams fields ("default": RefineParams() as shipped; "a=1,b=2": both).
Per refined correction and variant: boxes decoded (and reused), CPU-s of the refinement, mean Dice of the refined
labels against the reference and per class against the first variant's labels. For the first variant, each box
decoded again is listed (--boxes): slice, class, component pixels, the fewest pixels it differs from a component of
its class decoded on that slice (and that as a share of its size), the smallest largest corner move from a kept box
(px of the 256-px input), distance in slices from the corrected slice.
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

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.ahead import embed_ahead  # noqa: E402
from napari_fewshot.core.refine import Refiner  # noqa: E402
from napari_fewshot.core.sam_prompt import SIDE  # noqa: E402


def parse_variant(text: str) -> dict:
    """"default" -> {}; "reuse_changed=0,reuse_pixels=40" -> {"reuse_changed": 0.0, "reuse_pixels": 40.0}."""
    if text == "default" or text.startswith("default#"):
        return {}
    return {k: float(v) for k, v in (part.split("=") for part in text.split(","))}


def dice_per_class(a: np.ndarray, b: np.ndarray, classes) -> list[float]:
    out = []
    for c in classes:
        x, y = a == c, b == c
        total = x.sum() + y.sum()
        out.append(1.0 if total == 0 else round(float(2 * (x & y).sum() / total), 5))
    return out


def why(boxes, index: int, box: np.ndarray, part: tuple, shape: tuple) -> dict:
    """What the kept decodes of slice `index` offer the (class k, (H, W) bool component) `part` of `box`."""
    k, mask = part
    kept = boxes._parts.get(index, {})
    size = int(mask.sum())
    differ, moves = [], []
    for name, (b, c, crop) in kept.items():
        moves.append(float(np.abs(b - np.asarray(box, np.float32)).max()) * SIDE / max(shape))
        if c == k:
            window = boxes._kept[name][0]
            differ.append(int(size - mask[window].sum() + (mask[window] ^ crop).sum()))
    best = min(differ) if differ else None
    return {"slice": index, "class": int(k), "pixels": size, "differ_px": best, "kept_on_slice": len(kept),
            "differ_px256": None if best is None else round(best * (SIDE / max(shape)) ** 2, 1),
            "differ_share": None if best is None else round(best / max(size, 1), 3),
            "move_px256": round(min(moves), 2) if moves else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="ct")
    parser.add_argument("--variants", default="default;reuse_changed=0")
    parser.add_argument("--boxes", action="store_true", help="list every box the first variant decodes again")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from resegment_gui import scan

    ct = args.scan == "ct"
    volume, truth, painted, organ = scan("ct" if ct else "tiled", 0 if ct else int(args.scan))
    classes = [int(c) for c in np.unique(truth) if c]
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    base = SegmentationParams(cache_dir=tempfile.mkdtemp(prefix="fewshot-why-"), device="cpu")
    seg = FewShotSegmenter(base)
    seg.set_image(volume)
    run(seg.compute_features())
    names = args.variants.split(";")
    refiners = {}
    for name in names:
        params = dataclasses.replace(base, refine=RefineParams(enabled=True, **parse_variant(name)))
        refiners[name] = (params, Refiner(params, seg.sam))
    counts = {"prompts": 0}
    real_decode = seg.sam.decode

    def counting_decode(requests, *a, **k):
        counts["prompts"] += sum(len(boxes) for _, boxes, _ in requests)
        return real_decode(requests, *a, **k)

    seg.sam.decode = counting_decode
    first = refiners[names[0]][1].boxes
    real_get, listed, state = first.get, [], {"z": None}

    def recording_get(index, box, shape, shift=0.0, part=None, changed=0.0, *more):
        info = why(first, index, box, part, shape) if part is not None else None
        found = real_get(index, box, shape, shift, part, changed, *more)
        if found is None and info is not None:
            info["from_corrected"] = None if state["z"] is None else abs(index - state["z"])
            listed.append(info)
        return found

    first.get = recording_get
    candidates = [z for z in organ if z not in painted]
    chosen = candidates[:: max(1, len(candidates) // 6)][:6]
    report = {"scan": list(volume.shape), "variants": names, "corrections": chosen, "rounds": []}
    for n, z in enumerate([None] + chosen):
        if z is not None:
            support[z] = truth[z]
            rows, cols = np.nonzero(truth[z] == 1)
            r, c = int(np.median(rows)), int(np.median(cols))
            for d in range(-3, 4):  # the window's stroke: brush 3 along a diagonal through the liver's centre
                support[z, max(0, r + d - 1):r + d + 2, max(0, c + d - 1):c + d + 2] = 1
        state["z"] = z
        seg.params, seg._refiner = refiners[names[0]]
        cpu0 = time.process_time()
        coarse = run(seg.segment(support, refine_later=True))
        row = {"corrected": z, "window": n % 2 == 1 or z is None, "coarse_cpu_s": round(time.process_time() - cpu0, 2),
               "load": round(os.getloadavg()[0], 1)}
        if not row["window"]:  # an API correction: the coarse result only
            report["rounds"].append(row)
            print(json.dumps(row), flush=True)
            continue
        labels = {}
        order = names if n % 4 != 3 else [names[0]] + names[1:][::-1]
        for name in order:
            seg.params, seg._refiner = refiners[name]
            before, cpu = counts["prompts"], time.process_time()
            listed.clear() if name == names[0] else None
            final = run(seg.refine_result(coarse, first=[] if z is None else [z]))
            spent = round(time.process_time() - cpu, 2)
            labels[name] = np.asarray(final.labels)
            row[name] = {"boxes": counts["prompts"] - before, "cpu_s": spent,
                         "mean_dice_ref": round(float(np.mean(dice_per_class(labels[name], truth, classes))), 5)}
            if name == names[0]:
                row["decoded_again"] = list(listed) if args.boxes else len(listed)
                result0 = final
        for name in names:
            row[name]["dice_vs_first"] = dice_per_class(labels[name], labels[names[0]], classes)
        seg.params, seg._refiner = refiners[names[0]]
        run(embed_ahead(seg, result0))  # idle time in the window; the embeddings are shared by every variant
        report["rounds"].append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after every round: a long run stopped half-way keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
