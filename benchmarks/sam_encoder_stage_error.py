"""Where bf16 hurts LiteMedSAM's image encoder: each TinyViT stage converted to OpenVINO on its own and compiled in
f32 or bf16, chained, against torch float32's embeddings (no masks: the embedding's relative error).

    OMP_NUM_THREADS=1 python benchmarks/sam_encoder_stage_error.py BUSI CHAOS CODE[,CODE...]
    e.g. ... 2 1 ffffff,bbbbbb,fbbbbb,bbbbbf

A CODE has one letter per stage (patch_embed, layers.0, layers.1, layers.2, layers.3, neck): f = f32, b = bf16.
Planes as benchmarks/sam_encoder_precision.py (`planes(BUSI, CHAOS)`); its torch float32 reference embeddings
(/tmp/sam_encoder_precision_reference.pt) must exist: run that script first with at least as many planes.
Prints each stage's CPU seconds per plane in f32 and in bf16, and per CODE the median CPU seconds per plane
(every code on a plane in turn) and the relative error |e - r| / |r| (mean, max over planes).
"""
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvino as ov  # noqa: E402
from sam_encoder_precision import Neck, planes  # noqa: E402

from napari_fewshot.core.sam_prompt import BoxPrompter  # noqa: E402
from napari_fewshot.core.sam_runtime import no_telemetry  # noqa: E402

prompter = BoxPrompter()
encoder = prompter.model.image_encoder.eval()
parts = [encoder.patch_embed, *encoder.layers, Neck(encoder.neck)]
names = ["patch_embed"] + [f"layers.{i}" for i in range(len(encoder.layers))] + ["neck"]
todo = planes(int(sys.argv[1]), int(sys.argv[2]))
reference = torch.load("/tmp/sam_encoder_precision_reference.pt")
xs = [prompter.to_input(plane)[0] for _, plane, _ in todo]
core, compiled, h = ov.Core(), {}, xs[0]
threads = torch.get_num_threads()
with no_telemetry(), warnings.catch_warnings(), torch.no_grad():
    warnings.simplefilter("ignore")
    for name, part in zip(names, parts):
        model = ov.convert_model(part, example_input=h)
        model.reshape(list(h.shape))
        for precision in ("f32", "bf16"):
            compiled[name, precision[0]] = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads})
        h = part(h)


def run(code: str, x: torch.Tensor, seconds: dict) -> torch.Tensor:
    h = x.numpy()
    for name, c in zip(names, code):
        started = time.process_time()
        h = compiled[name, c](h)[0]
        seconds.setdefault((name, c), []).append(time.process_time() - started)
    return torch.from_numpy(h.copy())


codes = sys.argv[3].split(",")
for code in codes:
    run(code, xs[0], {})  # warm-up
seconds, total, error = {}, {c: [] for c in codes}, {c: [] for c in codes}
for (name, _, _), x in zip(todo, xs):
    for code in codes:
        started = time.process_time()
        got = run(code, x, seconds)
        total[code].append(time.process_time() - started)
        error[code].append(float((got - reference[name]).norm() / reference[name].norm()))
print("stage CPU-s per plane (median):", {f"{n}:{c}": round(float(np.median(s)), 4) for (n, c), s in sorted(seconds.items())})
for code in codes:
    print(f"{code} CPU-s {np.median(total[code]):.3f} relative error mean {np.mean(error[code]):.4f} "
          f"max {max(error[code]):.4f}")
print("load", open("/proc/loadavg").read().split()[:3])
