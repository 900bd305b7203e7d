"""Tuning a handful of LiteMedSAM mask-decoder weights on the signed slices (PerSAM-F style), on cached embeddings.

    state = yield from tune_decoder(prompter, examples, params)   # prompter: BoxPrompter-like (.model, .device)
    prompter.model.mask_decoder.load_state_dict(state)

Only (part of) the hypernetwork MLP of the single-mask output (`output_hypernetworks_mlps.0`, ~140k weights, what
turns the mask token into the mask's per-pixel weights) is trained, FineTuneParams.decoder_tuned says which part; the image embeddings come from a cache
and the decoder's transformer runs without gradients, so a step costs one decoder pass per example. Each step
decodes every signed object from a jittered box: its bounding box grown by a random margin of up to
`box_jitter` of its size per side (refinement's boxes come from coarse components that are often larger than
the object) and shifted by up to a tenth of its size, and scores BCE + Dice against the signed mask.
"""

from __future__ import annotations

import copy
import random
from typing import Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import FineTuneParams
from .feature_adapter import Adam
from .progress import Progress
from .sam_prompt import SIDE, PlaneEmbedding

TUNED = "output_hypernetworks_mlps.0."
"""The prefix of every decoder parameter Fine-tune may train (and a bank saves); the rest stay frozen."""

TUNED_PARTS = {"mlp": TUNED, "last": TUNED + "layers.2.", "bias": TUNED + "layers.2.bias"}
"""FineTuneParams.decoder_tuned -> the prefix trained: the whole hypernetwork MLP (~140k weights), its last layer
(32 x 256 + 32) or only that layer's bias (32 weights: a shift of the mask's per-pixel weights; PerSAM-F size)."""


def jittered_box(mask: np.ndarray, rng: random.Random, jitter: float) -> np.ndarray:
    """(H, W) bool mask -> (4,) x0, y0, x1, y1: its bounding box, each side moved out by U(0, jitter) of the
    box's size and the whole shifted by U(-0.1, 0.1) of it, clipped to the plane."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    dy, dx = rng.uniform(-0.1, 0.1) * bh, rng.uniform(-0.1, 0.1) * bw
    h, w = mask.shape
    grow = [rng.uniform(0, jitter) for _ in range(4)]
    return np.array([max(0, x0 - grow[0] * bw + dx), max(0, y0 - grow[1] * bh + dy),
                     min(w - 1, x1 + grow[2] * bw + dx), min(h - 1, y1 + grow[3] * bh + dy)], np.float32)


def _target(mask: np.ndarray, embedding: PlaneEmbedding, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) bool -> ((256, 256) float target in the padded input frame, (256, 256) bool: inside the plane)."""
    h, w = embedding.resized
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(h, w), mode="bilinear",
                      align_corners=False)[0, 0]
    target = F.pad(m, (0, SIDE - w, 0, SIDE - h)).to(device)
    valid = torch.zeros(SIDE, SIDE, dtype=torch.bool, device=device)
    valid[:h, :w] = True
    return (target > 0.5).float(), valid


def tune_decoder(prompter, examples: Sequence[tuple[PlaneEmbedding, np.ndarray]], params: FineTuneParams,
                 ) -> Generator[Progress, None, tuple[dict[str, torch.Tensor], list[float]]]:
    """Train the mask decoder's single-mask hypernetwork on `examples`; yields Progress(step, steps, loss=...).

    prompter: has .model.mask_decoder, .model.prompt_encoder and .device (core/sam_prompt.BoxPrompter).
    examples: (embedding with (1, 256, 64, 64) features, (H, W) bool mask of one signed object) pairs.
    Returns (the decoder's full state dict after tuning, detached copies; the losses). The decoder is left
    with its original weights: load the state where it should apply. Stopping early returns nothing.
    """
    decoder, prompt_encoder = prompter.model.mask_decoder, prompter.model.prompt_encoder
    original = copy.deepcopy(decoder.state_dict())
    rng = random.Random(params.seed)
    device = prompter.device
    data = [(e.features.float().to(device), e, m, *_target(m, e, device)) for e, m in examples if m.any()]
    prefix = TUNED_PARTS[params.decoder_tuned]
    tuned = [p for n, p in decoder.named_parameters() if n.startswith(prefix)]
    flags = {n: p.requires_grad for n, p in decoder.named_parameters()}
    for n, p in decoder.named_parameters():
        p.requires_grad_(n.startswith(prefix))
    optimiser = Adam(tuned, lr=params.decoder_learning_rate)
    losses: list[float] = []
    try:
        with torch.no_grad():
            image_pe = prompt_encoder.get_dense_pe()
        for step in range(params.decoder_steps if data else 0):
            chosen = rng.sample(data, min(len(data), params.decoder_batch))
            total = 0.0
            optimiser.zero_grad()
            for features, embedding, mask, target, valid in chosen:
                box = jittered_box(mask, rng, params.box_jitter) * embedding.scale
                with torch.no_grad():
                    sparse, dense = prompt_encoder(points=None, boxes=torch.from_numpy(box).to(device)[None, None],
                                                   masks=None)
                logits, _ = decoder(image_embeddings=features, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=False)
                logit = logits[0, 0][valid]
                t = target[valid]
                prob = torch.sigmoid(logit)
                dice = 1 - (2 * (prob * t).sum() + 1) / (prob.sum() + t.sum() + 1)
                loss = (F.binary_cross_entropy_with_logits(logit, t) + dice) / len(chosen)
                loss.backward()
                total += float(loss.detach())
            optimiser.step()
            losses.append(total)
            yield Progress(step + 1, params.decoder_steps, f"LiteMedSAM decoder step {step + 1} of "
                           f"{params.decoder_steps}", loss=total)
        state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    finally:
        decoder.load_state_dict(original)
        for n, p in decoder.named_parameters():
            p.requires_grad_(flags[n])
        decoder.eval()
    return state, losses
