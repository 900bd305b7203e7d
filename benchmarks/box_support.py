"""Box to paint: how good is the support one rectangle makes? Dice of the box-made mask against the reference.

    python benchmarks/box_support.py [--data ../shared/data] [--busi-images 0] [--chaos-cases 1,2,3,5,8]
        [--slices-per-organ 3] [--margin 0.1] [--jitter 5] [--seed 0] [--device cpu]
        [--set inside_box=false ...] [--out benchmarks/results/box_support.json]

BUSI: every image (or the first --busi-images of each class), box = the reference lesion's bounding box grown
by --margin of its size on each side, each side then moved by up to --jitter pixels (uniform, seeded): what a
hand-drawn rectangle looks like. CHAOS-T2: per scan and organ, --slices-per-organ slices spread evenly over
the organ's extent (its central 80 %), the organ's box on each (the same margin and jitter); the 2D organ
mask of that slice is the reference (a kidney's two pieces on one slice: the box covers both, the mask is one
component, which the report shows). Planes are windowed as the plugin does (ImageStack, modality auto).
`--set NAME=VALUE` overrides a BoxParams field.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHAOS_ORGANS = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}


def jittered_box(mask: np.ndarray, margin: float, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """The reference box with margin, each side moved by up to `jitter` pixels."""
    from napari_fewshot.core.sam_prompt import box_of

    box = box_of(mask, margin)
    return box + rng.uniform(-jitter, jitter, 4).astype(np.float32)


def raw_dice(boxes, plane: np.ndarray, box: np.ndarray, reference: np.ndarray) -> float:
    """Dice of the decoder's thresholded mask alone (no box crop, no largest component), for comparison;
    the plane's embedding is cached by then, so this costs one decoder pass."""
    from napari_fewshot.core.box_to_mask import clip_box

    clipped = clip_box(box, plane.shape[:2])
    probabilities = boxes.service.decode([(boxes.service.embedding(plane), clipped[None], None)])[0][0]
    return dice(probabilities > boxes.params.threshold, reference)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def busi_rows(boxes, data: Path, per_class: int, args, rng) -> list[dict]:
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.evaluation.datasets import load_busi

    names, images, masks = load_busi(data / "busi")
    rows = []
    for subset in ("benign", "malignant"):
        chosen = [i for i, n in enumerate(names) if n.startswith(subset + "/")]
        for i in chosen[:per_class] if per_class else chosen:
            plane = ImageStack([images[i]], modality="auto").slice(0)
            box = jittered_box(masks[i], args.margin, args.jitter, rng)
            started = time.perf_counter()
            made = boxes.mask(plane, box)
            rows.append({"image": names[i], "subset": subset, "dice": dice(made, masks[i]),
                         "dice_decoder_only": raw_dice(boxes, plane, box, masks[i]),
                         "box": [round(float(v), 1) for v in box], "seconds": time.perf_counter() - started})
    return rows


def chaos_rows(boxes, data: Path, cases: list[int], args, rng) -> list[dict]:
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume

    rows = []
    for case in cases:
        volume = read_volume(data / "chaos_t2" / f"image_{case}.nii.gz")
        labels = read_labels(data / "chaos_t2" / f"label_{case}.nii.gz", like=volume)
        stack = ImageStack(volume.data, modality="auto")
        for organ, name in CHAOS_ORGANS.items():
            present = np.flatnonzero((labels == organ).any(axis=(1, 2)))
            if not len(present):
                continue
            low, high = present[int(0.1 * (len(present) - 1))], present[int(0.9 * (len(present) - 1))]
            for z in sorted({int(round(v)) for v in np.linspace(low, high, args.slices_per_organ)}):
                reference, plane = labels[z] == organ, stack.slice(z)
                box = jittered_box(reference, args.margin, args.jitter, rng)
                started = time.perf_counter()
                made = boxes.mask(plane, box)
                rows.append({"case": case, "organ": name, "slice": z, "dice": dice(made, reference),
                             "dice_decoder_only": raw_dice(boxes, plane, box, reference),
                             "box": [round(float(v), 1) for v in box], "seconds": time.perf_counter() - started})
    return rows


def summary(rows: list[dict], key: str) -> dict:
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row["dice"])
    out = {k: {"mean": float(np.mean(v)), "median": float(np.median(v)), "n": len(v)} for k, v in groups.items()}
    every = [row["dice"] for row in rows]
    out["all"] = {"mean": float(np.mean(every)), "median": float(np.median(every)), "n": len(every),
                  "below_0.8": int(sum(d < 0.8 for d in every)),
                  "decoder_only_mean": float(np.mean([row["dice_decoder_only"] for row in rows]))}
    return out


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def main(argv=None) -> dict:
    from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--busi-images", type=int, default=0, help="per class; 0: all")
    parser.add_argument("--chaos-cases", default="1,2,3,5,8")
    parser.add_argument("--slices-per-organ", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--jitter", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "box_support.json")
    args = parser.parse_args(argv)
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = BoxParams(**overrides)
    boxes = BoxSegmenter(params, device=args.device)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    busi = busi_rows(boxes, args.data, args.busi_images, args, rng)
    cases = [int(c) for c in args.chaos_cases.split(",") if c]
    chaos = chaos_rows(boxes, args.data, cases, args, rng) if cases else []
    report = {
        "command": "python benchmarks/box_support.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "params": vars(params), "margin": args.margin, "jitter_px": args.jitter, "seed": args.seed,
        "device": str(boxes.device), "seconds": time.perf_counter() - started,
        "caveat": "MedSAM's training data (~1M public image-mask pairs) may include BUSI and CHAOS.",
        "busi": summary(busi, "subset") if busi else {}, "chaos": summary(chaos, "organ") if chaos else {},
        "busi_images": busi, "chaos_slices": chaos,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for name in ("busi", "chaos"):
        for group, values in report[name].items():
            more = f" (decoder only {values['decoder_only_mean']:.3f})" if "decoder_only_mean" in values else ""
            print(f"{name:6s} {group:13s} mean {values['mean']:.3f} median {values['median']:.3f} n {values['n']}{more}")
    return report


if __name__ == "__main__":
    main()
