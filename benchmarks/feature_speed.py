"""Seconds per slice of feature extraction, per encoder and slice size, on this machine.

    python benchmarks/feature_speed.py [--sizes 256 512] [--slices 16] [--device cpu] [--json OUT]

Runs the encoder the way the feature cache does (batches of `--batch` slices, no grad, fp16 storage)
on random slices after one warm-up batch, and reports the median over repeats. vgg16-panet is timed
with random weights when its ImageNet file is not on this machine (same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from napari_fewshot.core.devices import resolve_device
from napari_fewshot.core.encoders import available_encoders, create_encoder
from napari_fewshot.core.normalization import to_encoder_input
from napari_fewshot.errors import FewShotError


def time_encoder(name: str, size: int, slices: int, batch: int, device: torch.device, repeats: int = 3) -> dict:
    try:
        encoder, weights = create_encoder(name).to(device), "imagenet"
    except FewShotError:
        encoder, weights = create_encoder(name, pretrained=False).to(device), "random (same cost)"
    pixels = np.random.default_rng(0).random((batch, size, size), dtype=np.float32)
    x = to_encoder_input(pixels, None, encoder.normalization).to(device)
    with torch.no_grad():
        encoder(x)  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(max(1, slices // batch)):
                encoder(x).to(torch.float16)
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append((time.perf_counter() - start) / (max(1, slices // batch) * batch))
    return {"encoder": name, "size": size, "seconds_per_slice": statistics.median(runs), "weights": weights,
            "batch": batch, "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--encoders", nargs="+", default=available_encoders())
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [time_encoder(e, s, args.slices, args.batch, device) for e in args.encoders for s in args.sizes]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    print(f"| encoder | slice | s/slice ({device}) | weights |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['size']}² | {r['seconds_per_slice']:.3f} | {r['weights']} |")
    print(f"machine: {machine}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
