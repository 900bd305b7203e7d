"""Seconds for features, LiteMedSAM refinement, box decoding and fine-tuning, on the CPU and on a CUDA GPU.

    python benchmarks/gpu.py [--devices cpu,cuda] [--synthetic 512x512x300] [--cpu-slices 8] [--steps 10]
        [--quick] [--out benchmarks/results/gpu_<host>.json]

Two images: the CT sample (sample_data/ct_abdomen, its organ map as support and as "prediction" to refine)
and a synthetic volume (--synthetic WxHxS, float, three ellipsoid organs). Per device (default: cpu, plus
cuda when torch sees one):

- features: efficientnet-lite0 and litemedsam through FewShotSegmenter.compute_features at the default
  volume input size, after a one-slice warm-up; on the GPU every slice, on the CPU --cpu-slices of them
  (seconds per slice are reported with the count timed, and the whole volume extrapolated),
- refine: core.refine.Refiner on slices whose labels hold organs (LiteMedSAM embeds each slice once, then
  decodes one box per organ): the same slice counts as features,
- box: one box on one slice through core.box_to_mask.BoxSegmenter (embed + decode, then a second box on the
  same slice: decode only) - what Box -> paint costs,
- fine-tune: --steps episodes of efficientnet-lite0 fine-tuning on three support slices (seconds per step).

Model loading is timed apart ("load_s"). It also records where `--device auto` puts the feature encoder, the
refiner and the box tool (core/devices.resolve_device), so a run on a GPU machine shows they land on CUDA.
The whole run is kept under about five minutes on a GPU machine; --quick (a 128 x 128 x 8 synthetic volume,
2 CPU slices, 2 steps) proves the script works on a small CPU. Timings on a shared machine are inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("efficientnet-lite0", "litemedsam")
CT_ORGANS = {5: 1, 1: 2, 2: 3, 3: 4}  # CT sample labels -> 1 liver, 2 spleen, 3 kidney_right, 4 kidney_left


def synthetic_volume(width: int, height: int, slices: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(S, H, W) float32 in [0, 1] with three ellipsoid "organs" of different brightness plus noise, and their
    (S, H, W) uint8 labels 1..3."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:slices, :height, :width]
    labels = np.zeros((slices, height, width), np.uint8)
    for k, (cz, cy, cx, rz, ry, rx) in enumerate(((0.5, 0.4, 0.35, 0.4, 0.25, 0.2), (0.45, 0.6, 0.7, 0.3, 0.12, 0.1),
                                                   (0.55, 0.65, 0.3, 0.25, 0.1, 0.08)), start=1):
        inside = (((z - cz * slices) / (rz * slices)) ** 2 + ((y - cy * height) / (ry * height)) ** 2
                  + ((x - cx * width) / (rx * width)) ** 2) <= 1
        labels[inside] = k
    volume = np.float32(0.2) + np.float32(0.2) * labels.astype(np.float32)
    volume += rng.normal(0, 0.05, volume.shape).astype(np.float32)
    return np.clip(volume, 0, 1, out=volume), labels


def ct_sample() -> tuple[np.ndarray, np.ndarray]:
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    raw = read_labels(CT_LABELS, like=volume)
    labels = np.zeros(raw.shape, np.uint8)
    for source, target in CT_ORGANS.items():
        labels[raw == source] = target
    return np.asarray(volume.data), labels


def organ_slices(labels: np.ndarray, count: int | None) -> list[int]:
    """Slices holding any organ, `count` of them spread evenly (None: all)."""
    present = np.flatnonzero(labels.reshape(len(labels), -1).any(1)).tolist()
    if count is None or count >= len(present):
        return present
    return [present[int(i)] for i in np.linspace(0, len(present) - 1, count).round()]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _drain(generator):
    """Run a core generator to its end; returns its return value."""
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value


def time_features(volume, encoder: str, device: torch.device, indices: list[int]) -> tuple[dict, object]:
    from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams

    started = time.perf_counter()
    segmenter = FewShotSegmenter(SegmentationParams(encoder=encoder, device=str(device),
                                                  refine=RefineParams(enabled=False)))
    segmenter.set_image(volume)
    _drain(segmenter.compute_features(indices[:1]))  # loads the weights and warms the device up
    _sync(device)
    load = time.perf_counter() - started
    rest = indices[1:] or indices
    started = time.perf_counter()
    _drain(segmenter.compute_features(rest))
    _sync(device)
    seconds = time.perf_counter() - started
    per_slice = seconds / len(rest)
    return {"encoder": encoder, "slices_timed": len(rest), "seconds": seconds, "seconds_per_slice": per_slice,
            "whole_volume_s": per_slice * len(volume), "load_and_warm_up_s": load,
            "input_size": segmenter.params.input_size_for(segmenter.stack),
            "encoder_device": str(next(segmenter.encoder.parameters()).device)}, segmenter


def time_refine(segmenter, labels: np.ndarray, indices: list[int]) -> dict:
    from napari_fewshot.core.refine import Refiner

    refiner = Refiner(segmenter.params, segmenter.sam)
    started = time.perf_counter()
    refiner.service.prompter  # loads LiteMedSAM
    planes = [labels[i].copy() for i in range(len(labels))]
    _drain(refiner.refine(segmenter.stack, planes, indices[:1], [1, 2, 3, 4]))  # warm-up slice
    _sync(segmenter.device)
    load = time.perf_counter() - started
    rest = indices[1:] or indices
    started = time.perf_counter()
    _drain(refiner.refine(segmenter.stack, planes, rest, [1, 2, 3, 4]))
    _sync(segmenter.device)
    seconds = time.perf_counter() - started
    return {"slices_timed": len(rest), "seconds": seconds, "seconds_per_slice": seconds / len(rest),
            "embeddings_computed": refiner.service.computed, "load_and_warm_up_s": load,
            "device": str(refiner.service.prompter.device)}


def time_box(stack, labels: np.ndarray, index: int, device: torch.device) -> dict:
    from napari_fewshot.core.box_to_mask import BoxSegmenter
    from napari_fewshot.core.sam_prompt import box_of

    boxes = BoxSegmenter(device=str(device))
    started = time.perf_counter()
    boxes.service.prompter  # loads LiteMedSAM
    load = time.perf_counter() - started
    plane = stack.slice(index)
    organ = int(np.bincount(labels[index].ravel(), minlength=2)[1:].argmax()) + 1
    box = box_of(labels[index] == organ, 0.1)
    boxes.mask(stack.slice(max(index - 1, 0)), box)  # warm-up on another slice
    _sync(device)
    timings = []
    for _ in range(2):  # the first embeds the slice, the second only decodes
        started = time.perf_counter()
        boxes.mask(plane, box)
        _sync(device)
        timings.append(time.perf_counter() - started)
    return {"first_box_s": timings[0], "second_box_same_slice_s": timings[1], "load_s": load,
            "device": str(boxes.service.prompter.device)}


def time_fine_tune(segmenter, labels: np.ndarray, steps: int) -> dict:
    from napari_fewshot.core import FineTuneParams

    support = np.zeros_like(labels)
    for i in organ_slices(labels, 3):
        support[i] = labels[i]
    started = time.perf_counter()
    _drain(segmenter.fine_tune(support, FineTuneParams(method="encoder", steps=1)))  # warm-up step (support features, optimiser)
    _sync(segmenter.device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    losses = _drain(segmenter.fine_tune(support, FineTuneParams(method="encoder", steps=steps)))
    _sync(segmenter.device)
    seconds = time.perf_counter() - started
    segmenter.reset_weights()
    return {"encoder": segmenter.params.encoder, "steps": steps, "seconds": seconds,
            "seconds_per_step": seconds / steps,
            "warm_up_s": warm, "losses": [round(float(v), 4) for v in losses]}


def auto_devices() -> dict:
    """Where `--device auto` puts the feature encoder, the refiner and the box tool (nothing is loaded)."""
    from napari_fewshot.core import FewShotSegmenter, SegmentationParams
    from napari_fewshot.core.box_to_mask import BoxSegmenter
    from napari_fewshot.core.devices import resolve_device

    segmenter = FewShotSegmenter(SegmentationParams(encoder="litemedsam", device="auto"))
    return {"resolve_device(auto)": str(resolve_device("auto")), "segmenter": str(segmenter.device),
            "refiner": str(segmenter.refiner.device), "box_tool": str(BoxSegmenter(device="auto").device)}


def run_device(device: torch.device, images: dict, args) -> dict:
    out = {}
    for name, (volume, labels) in images.items():
        count = None if device.type == "cuda" else args.cpu_slices
        indices = organ_slices(labels, count)
        row = {"shape": list(volume.shape), "features": []}
        segmenters = {}
        for encoder in ENCODERS:
            timing, segmenters[encoder] = time_features(volume, encoder, device, indices)
            row["features"].append(timing)
            print(f"{device} {name} features {encoder}: {timing['seconds_per_slice']:.3f} s/slice "
                  f"({timing['slices_timed']} slices)", flush=True)
        lite = segmenters["efficientnet-lite0"]
        row["refine"] = time_refine(lite, labels, indices)
        print(f"{device} {name} refine: {row['refine']['seconds_per_slice']:.3f} s/slice", flush=True)
        row["box"] = time_box(lite.stack, labels, indices[len(indices) // 2], device)
        box = row["box"]
        print(f"{device} {name} box: {box['first_box_s']:.3f} s, again {box['second_box_same_slice_s']:.3f} s",
              flush=True)
        row["fine_tune"] = time_fine_tune(lite, labels, args.steps)
        print(f"{device} {name} fine-tune: {row['fine_tune']['seconds_per_step']:.3f} s/step", flush=True)
        out[name] = row
        del segmenters
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu, plus cuda when available")
    parser.add_argument("--synthetic", default="512x512x300", help="W x H x S of the synthetic volume")
    parser.add_argument("--cpu-slices", type=int, default=8, help="slices timed on the CPU (the GPU times all)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="128 x 128 x 8 synthetic, 2 CPU slices, 2 steps")
    parser.add_argument("--no-ct", action="store_true", help="the synthetic volume only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.synthetic, args.cpu_slices, args.steps = "128x128x8", 2, 2
    width, height, slices = (int(v) for v in args.synthetic.lower().split("x"))
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    started = time.perf_counter()
    images = {} if args.no_ct else {"ct_sample": ct_sample()}
    images[f"synthetic_{args.synthetic}"] = synthetic_volume(width, height, slices)
    report = {
        "host": socket.gethostname(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "auto_device": auto_devices(), "devices": {},
    }
    for name in devices:
        report["devices"][name] = run_device(torch.device(name), images, args)
    report["seconds"] = time.perf_counter() - started
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_{report['host']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
