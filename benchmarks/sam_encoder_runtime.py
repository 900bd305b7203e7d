"""LiteMedSAM's image encoder as the service runs it: torch (bfloat16 autocast where the CPU has it: what ran
before) against OpenVINO (core/sam_runtime.py), interleaved in one process, on real planes.

    python benchmarks/sam_encoder_runtime.py [--busi 4] [--repeats 3] [--bf16] [--out FILE]

Planes: the CT sample's largest slice of each of its organs (every organ on it boxed) and BUSI images (the
lesion boxed), as benchmarks/sam_runtimes.py. Each repeat embeds every plane with every runtime in turn
(torch, OpenVINO, ...), so load changes hit all alike; seconds per plane are medians over repeats x planes.
Each runtime's embeddings are decoded by torch's decoder with the same boxes (reference box + 10 %); Dice of
the masks against torch float32's (no autocast), min / mean over masks. Also reports the conversion's seconds
(first start) and the compile from the cached IR (later starts). --bf16 adds OpenVINO with a bf16 precision
hint (for the record: it is adopted only if its Dice min is >= 0.99). The load average is in the report.
MedSAM's training data may include public breast-ultrasound sets (possibly BUSI) and abdominal CT sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load() -> list[str]:
    return open("/proc/loadavg").read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busi", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    from sam_runtimes import real_planes

    from napari_fewshot.core.sam_prompt import BoxPrompter, PlaneEmbedding
    from napari_fewshot.core.sam_runtime import TorchEncoder, encoder_runtime

    report = {"load_before": load(), "torch_threads": torch.get_num_threads()}
    prompter = BoxPrompter()
    encoder = prompter.model.image_encoder
    planes = real_planes(args.busi)
    inputs = [prompter.to_input(plane) for plane, _ in planes]
    runtimes = {"torch (today)": TorchEncoder(encoder, torch.device("cpu"))}
    with tempfile.TemporaryDirectory() as tmp:
        stats = {}
        started = time.perf_counter()
        runtimes["openvino"] = encoder_runtime("openvino", encoder, torch.device("cpu"), Path(tmp), "bench", stats)
        report["openvino_first_start_s"] = time.perf_counter() - started
        started = time.perf_counter()
        again = encoder_runtime("openvino", encoder, torch.device("cpu"), Path(tmp), "bench", stats)
        report["openvino_cached_start_s"] = time.perf_counter() - started
        report["conversions"] = stats.get("conversions", 0)
        report["status"] = {name: r.status for name, r in runtimes.items()} | {"cached": again.status}
        if args.bf16:
            import openvino as ov

            folder = next((Path(tmp) / "sam" / "openvino").iterdir())
            compiled = ov.Core().compile_model(str(folder / "encoder.xml"), "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
            runtimes["openvino bf16 hint"] = lambda x, c=compiled: torch.from_numpy(c(x.numpy())[0].copy())
    print(json.dumps(report, indent=1), flush=True)

    def decode(features, plane, scale, boxes):
        return prompter.decode(PlaneEmbedding(features.float(), plane.shape[:2], scale), np.stack(boxes)) > 0.5

    with torch.no_grad():
        reference = [decode(encoder(x), plane, scale, boxes) for (plane, boxes), (x, scale) in zip(planes, inputs)]
        for run in runtimes.values():  # warm-up, untimed
            run(inputs[0][0])
        seconds = {name: [] for name in runtimes}
        masks = {name: [] for name in runtimes}
        for repeat in range(args.repeats):
            for p, ((plane, boxes), (x, scale)) in enumerate(zip(planes, inputs)):
                for name, run in runtimes.items():
                    started = time.perf_counter()
                    features = run(x)
                    seconds[name].append(time.perf_counter() - started)
                    if repeat == 0:
                        masks[name].append(decode(features, plane, scale, boxes))
            print(f"repeat {repeat}: " + ", ".join(f"{n} {np.median(s):.2f} s" for n, s in seconds.items())
                  + f"; load {load()}", flush=True)
    base = float(np.median(seconds["torch (today)"]))
    for name in runtimes:
        dices = [2 * (a & b).sum() / max(1, a.sum() + b.sum())
                 for got, ref in zip(masks[name], reference) for a, b in zip(got, ref)]
        median = float(np.median(seconds[name]))
        report[name] = {"median_s_per_plane": median, "speedup_vs_torch_today": base / median,
                        "dice_vs_torch_float32_min_mean": [float(np.min(dices)), float(np.mean(dices))],
                        "masks": len(dices)}
    report["planes"] = len(planes)
    report["load_after"] = load()
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
