"""LiteMedSAM's mask decoder (WindowGraph, core/sam_decoder.py) converted to OpenVINO as is, against the same graph with
each attention written as F.scaled_dot_product_attention (OpenVINO's fused ScaledDotProductAttention op): whether
the transposes OpenVINO puts around the 4096-token attention heads (15-17 % of a decode, BENCHMARKS.md session 18)
go away with the fused op (issue 21 / issue 20's cost; session 20, the lead). One BUSI image's embedding, 24 calls
of 4 random boxes (windowed and whole-grid alternately), both graphs per call in alternating order, process CPU
seconds; mask Dice (logits > 0) between the two.

    OMP_NUM_THREADS=1 python benchmarks/decoder_sdpa_ab.py
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import openvino as ov  # noqa: E402

from napari_fewshot.core import sam_decoder  # noqa: E402
from napari_fewshot.core.sam_runtime import openvino_setup  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402


def sdpa_forward(self, q, k, v):
    """SAM's Attention.forward with the fused op."""
    q, k, v = (self._separate_heads(x, self.num_heads) for x in (self.q_proj(q), self.k_proj(k), self.v_proj(v)))
    return self.out_proj(self._recombine_heads(F.scaled_dot_product_attention(q, k, v)))


def sdpa_attend(attention, q, k, v):
    """sam_decoder._attend with the fused op."""
    q, k, v = (attention._separate_heads(x, attention.num_heads) for x in (q, k, v))
    return attention.out_proj(attention._recombine_heads(F.scaled_dot_product_attention(q, k, v)))


def main() -> None:
    service = LiteMedSAMService(device="cpu")
    _, images, _ = load_busi(ROOT.parent / "shared" / "data" / "busi")
    plane = np.asarray(images[5], np.float32)
    embedding = service.embedding(plane / 255.0 if plane.max() > 1 else plane)  # the service reads [0, 1]
    model = service.prompter.model
    attention = type(model.mask_decoder.transformer.layers[0].self_attn)
    version, threads, core, config = openvino_setup(ov, sam_decoder.PRECISION)
    graphs = {"as is": sam_decoder._convert(ov, model, 3)}
    real = attention.forward, sam_decoder._attend
    attention.forward, sam_decoder._attend = sdpa_forward, sdpa_attend
    try:
        graphs["sdpa"] = sam_decoder._convert(ov, model, 3)
    finally:
        attention.forward, sam_decoder._attend = real
    print("fused op in the sdpa graph:", any(op.get_type_name() == "ScaledDotProductAttention"
                                             for op in graphs["sdpa"].get_ops()))
    runtimes = {k: sam_decoder.OpenVINODecoder(core.compile_model(g, "CPU", config), model, version, threads, "A/B")
                for k, g in graphs.items()}
    rng = np.random.default_rng(0)
    h, w = embedding.shape
    seconds, dices = {k: [] for k in runtimes}, []
    for trial in range(24):
        centre = rng.uniform(0.2, 0.8, (4, 2)) * [w, h]
        size = rng.uniform(0.1, 0.4, (4, 2)) * [w, h]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
        sparse, dense = model.prompt_encoder(points=None, boxes=torch.from_numpy(boxes * embedding.scale)[:, None],
                                             masks=None)
        window = (8, 56, 8, 56) if trial % 2 else (0, 64, 0, 64)
        out = {}
        for k in list(runtimes)[:: 1 if trial % 2 else -1]:
            start = time.process_time()
            out[k] = runtimes[k](embedding.features.float(), sparse.detach(), dense[:1].detach(),
                                 torch.zeros(4, dtype=torch.int64), window)[0] > 0
            seconds[k].append(time.process_time() - start)
        a, b = out["as is"].numpy(), out["sdpa"].numpy()
        for i in range(4):
            total = a[i].sum() + b[i].sum()
            dices.append(1.0 if total == 0 else 2 * (a[i] & b[i]).sum() / total)
    for k, v in seconds.items():
        print(f"{k}: CPU-s per 4-box call, median {np.median(v[2:]):.4f}, mean {np.mean(v[2:]):.4f}")
    print(f"mask Dice as is vs sdpa: mean {np.mean(dices):.4f}, min {np.min(dices):.4f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
