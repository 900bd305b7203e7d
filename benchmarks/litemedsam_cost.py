"""CPU cost per slice of LiteMedSAM as encoder and as refiner, against EfficientNet-Lite0, measured in one
process and interleaved (so a loaded machine inflates every figure alike and the ratios stay fair).

    python benchmarks/litemedsam_cost.py [--repeats 5] [--out benchmarks/results/litemedsam/cost.json]

Per CHAOS-T2 slice (256 x 256 -> 384 px encoder input): lite0 features, litemedsam features, LiteMedSAM's
image embedding (256 px, float32 and in bfloat16 where native: what refine computes once per slice), and one
box decode (one component).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_fewshot.core.encoders import create_encoder
from napari_fewshot.core.devices import native_autocast
from napari_fewshot.core.normalization import to_encoder_input
from napari_fewshot.core.sam_prompt import BoxPrompter, box_of
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.io import read_labels, read_volume

ROOT = Path(__file__).resolve().parents[1]


def _bf16(job):
    with native_autocast("cpu"):
        return job()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "litemedsam" / "cost.json"))
    args = parser.parse_args()
    volume = read_volume(Path(args.data) / "chaos_t2" / "image_1.nii.gz")
    labels = read_labels(Path(args.data) / "chaos_t2" / "label_1.nii.gz", like=volume)
    stack = ImageStack(volume.data)
    index = int(np.argmax((labels == 1).sum((1, 2))))
    plane = stack.slice(index)
    lite0, lms, prompter = create_encoder("efficientnet-lite0"), create_encoder("litemedsam"), BoxPrompter()
    x, x_lms = (to_encoder_input(plane[None], 384, encoder.normalization) for encoder in (lite0, lms))
    box = box_of(labels[index] == 1)[None]
    jobs = {
        "lite0_features_384": lambda: lite0(x),
        "litemedsam_features_384": lambda: lms(x_lms),
        "litemedsam_embedding_256": lambda: prompter.embed(plane),
        "litemedsam_embedding_256_bf16": lambda: _bf16(lambda: prompter.embed(plane)),  # what refine runs
    }
    embedding = prompter.embed(plane)
    jobs["decode_one_box"] = lambda: prompter.decode(embedding, box)
    times = {name: [] for name in jobs}
    with torch.no_grad():
        for job in jobs.values():
            job()  # warm-up
        for _ in range(args.repeats):
            for name, job in jobs.items():
                started = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - started)
    report = {name: round(float(np.median(t)), 4) for name, t in times.items()}
    report["ratios_to_lite0"] = {name: round(report[name] / report["lite0_features_384"], 2) for name in jobs}
    report["torch_threads"] = torch.get_num_threads()
    report["load_average"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
