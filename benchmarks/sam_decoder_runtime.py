"""LiteMedSAM's mask decoder as the service runs it: torch (what ran before) against OpenVINO (core/sam_decoder.py),
interleaved in one process, on real planes' embeddings (the decoder's counterpart of sam_encoder_runtime.py).

    python benchmarks/sam_decoder_runtime.py [--busi 4] [--repeats 3] [--out FILE]

Planes: those of benchmarks/sam_runtimes.py (the CT sample's largest slice of each organ, every organ on it
boxed; BUSI images, the lesion boxed), each box at three margins (5, 10, 20 %). Embeddings by OpenVINO's encoder,
once. Each repeat decodes, with every runtime in turn: one box (the first), and every box of every plane in
calls of 32 (refinement's batching); and every box at low resolution in calls of 4 (selection's candidates; torch
with bfloat16 autocast where the CPU has it, as the service ran it). OpenVINO twice: as the service runs it
(sam_decoder.PRECISION, bf16 where native) and compiled in f32 (session 10's precision). Process CPU seconds and wall seconds, medians
over repeats; Dice of the masks against torch float32's, min / mean. The load average is in the report.
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
    parser.add_argument("--out")
    args = parser.parse_args()
    from sam_runtimes import real_planes

    from napari_fewshot.core.devices import native_autocast
    from napari_fewshot.core.sam_decoder import TorchDecoder
    from napari_fewshot.core.sam_prompt import BoxPrompter
    from napari_fewshot.core.sam_service import LiteMedSAMService

    report = {"load_before": load(), "torch_threads": torch.get_num_threads()}
    prompter = BoxPrompter()
    with tempfile.TemporaryDirectory() as tmp:
        service = LiteMedSAMService("cpu", 1 << 30, prompter_factory=lambda device: prompter, runtime="openvino",
                                    model_dir=tmp)
        requests = []
        for plane, boxes in real_planes(args.busi):
            grown = [_grow(b, plane.shape, m) for b in boxes for m in (1.1 / 1.2, 1.0, 1.4 / 1.2)]
            requests.append((service.embedding(plane), np.stack(grown), None))
        started = time.perf_counter()
        ov = service.decoder_runtime()
        report["openvino_first_start_s"] = round(time.perf_counter() - started, 2)
        report["status"] = service.runtime_status
        torch_decoder = TorchDecoder(prompter.model)
        ov_f32 = _decoder_in(prompter.model, "f32")  # session 10's precision, beside the service's (bf16 where native)
        report["f32_status"] = ov_f32.status

        def ov_f32_run(reqs, low):
            return [p for p, _ in prompter.decode_batch(reqs, 4 if low else 32, low_res=low, decoder=ov_f32)]

        def torch_low(reqs):
            with native_autocast("cpu"):
                return [p for p, _ in prompter.decode_batch(reqs, 4, low_res=True, decoder=torch_decoder)]

        one = [(requests[0][0], requests[0][1][:1], None)]
        jobs = {
            "one box: torch": lambda: [p for p, _ in prompter.decode_batch(one, decoder=torch_decoder)],
            "one box: openvino": lambda: service.decode(one),
            "all boxes: torch": lambda: [p for p, _ in prompter.decode_batch(requests, 32, decoder=torch_decoder)],
            "all boxes: openvino": lambda: service.decode(requests),
            "all boxes: openvino f32": lambda: ov_f32_run(requests, False),
            "all boxes low-res: torch (bf16 where native)": lambda: torch_low(requests),
            "all boxes low-res: openvino": lambda: service.decode(requests, low_res=True),
            "all boxes low-res: openvino f32": lambda: ov_f32_run(requests, True),
        }
        with torch.no_grad():
            reference = [p for p, _ in prompter.decode_batch(requests, 32, decoder=torch_decoder)]
            reference_low = [p for p, _ in prompter.decode_batch(requests, 4, low_res=True, decoder=torch_decoder)]
            for job in jobs.values():
                job()  # warm-up, untimed
            cpu = {name: [] for name in jobs}
            wall = {name: [] for name in jobs}
            outputs = {}
            for repeat in range(args.repeats):
                for name, job in jobs.items():
                    w, c = time.perf_counter(), time.process_time()
                    outputs[name] = job()
                    cpu[name].append(time.process_time() - c)
                    wall[name].append(time.perf_counter() - w)
                print(f"repeat {repeat}: " + ", ".join(f"{n} {np.median(s):.2f}" for n, s in cpu.items())
                      + f" CPU-s; load {load()}", flush=True)
    for name in jobs:
        ref = reference_low if "low-res" in name else reference[:1] if name.startswith("one") else reference
        got = outputs[name]
        dices = [2 * ((a > 0.5) & (b > 0.5)).sum() / max(1, (a > 0.5).sum() + (b > 0.5).sum())
                 for x, y in zip(got, ref) for a, b in zip(x[:len(y)], y[:len(x)])]
        report[name] = {"cpu_s": round(float(np.median(cpu[name])), 3), "wall_s": round(float(np.median(wall[name])), 3),
                        "dice_vs_torch_float32_min_mean": [round(float(np.min(dices)), 4), round(float(np.mean(dices)), 4)],
                        "masks": len(dices)}
    report["prompts"] = int(sum(len(b) for _, b, _ in requests))
    report["load_after"] = load()
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


def _decoder_in(model, precision: str):
    """The service's OpenVINO decoder compiled with another precision hint (converted in memory)."""
    from napari_fewshot.core import sam_decoder

    kept, sam_decoder.PRECISION = sam_decoder.PRECISION, precision
    try:
        return sam_decoder.decoder_runtime("openvino", model, torch.device("cpu"), None, "benchmark")
    finally:
        sam_decoder.PRECISION = kept


def _grow(box: np.ndarray, shape, factor: float) -> np.ndarray:
    """A reference box (+ 10 %) rescaled about its centre by `factor` (clipped to the plane)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * factor, (y1 - y0) / 2 * factor
    return np.array([max(0, cx - hw), max(0, cy - hh), min(shape[1] - 1, cx + hw), min(shape[0] - 1, cy + hh)],
                    np.float32)


if __name__ == "__main__":
    main()
