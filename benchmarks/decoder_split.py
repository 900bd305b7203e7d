"""LiteMedSAM's mask decoder, graph 2 (each image once, core/sam_decoder.py SharedImageGraph) against graph 1 (a copy
of the image per prompt, SingleMaskGraph: what ran before session 17), both OpenVINO as the service compiles them.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/decoder_split.py [--busi 12] [--repeats 5] [--json OUT]

cost: one decoder call of M = 1, 4, 16 boxes on one CT sample plane (the liver's largest slice, boxes around the
    liver jittered), each graph in turn per repeat (interleaved, same load); process CPU seconds per call,
    median over repeats; and the image-only part alone (the first block's three projections of the 4096 image
    tokens, converted as a small graph of its own, one image) timed in the same loop: its share of a graph-1
    call of M boxes is M x its time / the call's time.
exact: real planes (the CT sample's largest slice of each organ and BUSI images of ../shared/data/busi), each
    reference box at 3 margins plus 4 jittered boxes, a few with a coarse-mask prompt (their own row), all
    decoded in calls of 32 mixing planes (as refinement batches them) and at low resolution in calls of 4
    (selection's candidates): max |delta logit| and |delta IoU estimate| of graph 2 against graph 1, Dice of the
    logits > 0 masks, min over boxes; and each plane's boxes decoded alone equal to the same boxes in the
    mixed call. MedSAM's training data included public breast-ultrasound (possibly BUSI) and abdominal CT/MR
    sets, so figures with LiteMedSAM in them may be optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Capture:
    """A decoder runtime that keeps the logits and IoU estimates it returned (in call order)."""

    def __init__(self, runtime):
        self.runtime, self.logits, self.iou = runtime, [], []

    def __call__(self, *args):
        logits, iou = self.runtime(*args)
        self.logits.append(logits.clone())
        self.iou.append(iou.clone())
        return logits, iou

    def take(self):
        out = torch.cat(self.logits), torch.cat(self.iou)
        self.logits, self.iou = [], []
        return out


def decoders(model):
    """{1: graph 1, 2: graph 2} compiled in memory as the service compiles them (precision, threads)."""
    import openvino as ov

    from napari_fewshot.core import sam_decoder

    out = {}
    for graph in (1, 2):
        os.environ[sam_decoder.SPLIT_ENV] = "0" if graph == 1 else "1"
        out[graph] = sam_decoder._openvino_decoder(ov, model, None, "benchmark", {})
        assert out[graph].graph == graph
    os.environ.pop(sam_decoder.SPLIT_ENV)
    return out


def image_only(model):
    """The image-only part as a compiled graph: (1, 256, 64, 64) src -> three (1, 4096, 128) projections."""
    import openvino as ov

    from napari_fewshot.core.sam_decoder import PRECISION, openvino_setup

    layer = model.mask_decoder.transformer.layers[0]
    pe = model.prompt_encoder.get_dense_pe().detach().flatten(2).permute(0, 2, 1)

    class Part(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer
            self.register_buffer("pe", pe.clone())

        def forward(self, src):
            image = src.flatten(2).permute(0, 2, 1)
            keyed = image + self.pe
            to_image, to_token = self.layer.cross_attn_token_to_image, self.layer.cross_attn_image_to_token
            return to_image.k_proj(keyed), to_image.v_proj(image), to_token.q_proj(keyed)

    _, _, core, config = openvino_setup(ov, PRECISION)
    with torch.no_grad():
        converted = ov.convert_model(Part().eval(), example_input=(torch.zeros(1, 256, 64, 64),))
    return core.compile_model(converted, "CPU", config)


def jitter(box, shape, rng, n):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    out = []
    for _ in range(n):
        d = rng.uniform(-0.15, 0.15, 4) * np.array([w, h, w, h])
        b = np.array([x0, y0, x1, y1]) + d
        out.append(np.clip(b, 0, [shape[1] - 1, shape[0] - 1] * 2).astype(np.float32))
    return out


def cost(prompter, service, runs, plane, box, repeats):
    rng = np.random.default_rng(0)
    embedding = service.embedding(plane)
    rows = {}
    src = (embedding.features.float() + prompter.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1))
    src = src.detach().contiguous().numpy()
    for m in (1, 4, 16):
        requests = [(embedding, np.stack(jitter(box, plane.shape, rng, m)), None)]
        times = {k: [] for k in ("graph 1", "graph 2", "image-only part")}
        for rep in range(repeats + 1):  # the first: warm-up
            for name, job in (("graph 1", lambda: prompter.decode_batch(requests, 32, decoder=runs[1])),
                              ("graph 2", lambda: prompter.decode_batch(requests, 32, decoder=runs[2])),
                              ("image-only part", lambda: runs["part"]([src]))):
                started = time.process_time()
                job()
                if rep:
                    times[name].append(time.process_time() - started)
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows[m] = {"cpu_s_per_call": med, "cpu_s_per_box": {k: med[k] / m for k in ("graph 1", "graph 2")},
                   "image_only_share_of_graph1_call": m * med["image-only part"] / med["graph 1"],
                   "graph2_over_graph1": med["graph 2"] / med["graph 1"], "load": os.getloadavg()[0]}
        print(m, json.dumps(rows[m]), flush=True)
    return rows


def exact(prompter, service, runs, planes, rng):
    requests = []
    for plane, boxes in planes:
        embedding = service.embedding(plane)
        grown = [b for box in boxes for b in [box] + jitter(box, plane.shape, rng, 2)]
        requests.append((embedding, np.stack(grown), None))
    # a few coarse-mask prompts: each its own row (what refinement's later rounds may send)
    plane, boxes = planes[0]
    from napari_fewshot.core.sam_prompt import box_region

    masks = np.stack([box_region(b, plane.shape[:2]).astype(np.float32) for b in boxes])
    requests.append((requests[0][0], np.stack(boxes), masks))
    captures = {g: Capture(runs[g]) for g in (1, 2)}
    report = {"planes": len(planes), "boxes": int(sum(len(r[1]) for r in requests))}
    for mode, size, low in (("calls of 32", 32, False), ("low-res calls of 4", 4, True)):
        probs = {g: prompter.decode_batch(requests, size, low_res=low, decoder=captures[g]) for g in (1, 2)}
        (l1, i1), (l2, i2) = captures[1].take(), captures[2].take()
        a, b = l1 > 0, l2 > 0
        dice = (2 * (a & b).sum((1, 2, 3)) / (a.sum((1, 2, 3)) + b.sum((1, 2, 3))).clamp(min=1)).numpy()
        pdice = []
        for (p1, _), (p2, _) in zip(probs[1], probs[2]):
            for x, y in zip(p1 > 0.5, p2 > 0.5):
                pdice.append(1.0 if not (x.any() or y.any()) else 2 * (x & y).sum() / (x.sum() + y.sum()))
        report[mode] = {"max_abs_logit_delta": float((l1 - l2).abs().max()),
                        "max_abs_iou_delta": float((i1 - i2).abs().max()),
                        "logit_mask_dice_min": float(dice.min()), "logit_mask_dice_mean": float(dice.mean()),
                        "prob_mask_dice_min": float(min(pdice)),
                        "pixels_differing_prob_gt_half": int(sum(((p1 > 0.5) != (p2 > 0.5)).sum()
                                                                 for (p1, _), (p2, _) in zip(probs[1], probs[2])))}
        print(mode, json.dumps(report[mode]), flush=True)
    # each request alone (graph 2) against the same boxes in the mixed call (graph 2)
    mixed = prompter.decode_batch(requests, 32, decoder=runs[2])
    alone = [prompter.decode_batch([r], 32, decoder=runs[2])[0] for r in requests]
    report["alone_vs_mixed_max_abs_prob_delta"] = float(max(np.abs(a[0] - m[0]).max() for a, m in zip(alone, mixed)))
    print("alone vs mixed", report["alone_vs_mixed_max_abs_prob_delta"], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busi", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    from sam_runtimes import real_planes

    from napari_fewshot.core.sam_prompt import BoxPrompter
    from napari_fewshot.core.sam_service import LiteMedSAMService

    report = {"load_before": os.getloadavg(), "torch_threads": torch.get_num_threads(),
              "omp": os.environ.get("OMP_NUM_THREADS")}
    prompter = BoxPrompter()
    service = LiteMedSAMService("cpu", 1 << 30, prompter_factory=lambda device: prompter)
    runs = decoders(prompter.model)
    runs["part"] = image_only(prompter.model)
    report["status"] = runs[2].status
    print(report, flush=True)
    planes = real_planes(args.busi)
    plane, boxes = planes[0]
    report["cost"] = cost(prompter, service, runs, plane, boxes[0], args.repeats)
    if not args.skip_exact:
        report["exact"] = exact(prompter, service, runs, planes, np.random.default_rng(1))
    report["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
