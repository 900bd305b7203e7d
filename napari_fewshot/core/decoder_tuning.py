"""Tuning LiteMedSAM's single-mask hypernetwork on the signed slices (PerSAM-F style), on cached decoder activations.

    state, losses, kept_step = yield from tune_decoder(prompter, examples, params)   # prompter: BoxPrompter-like
    service.load_decoder_state(state)                              # a full mask-decoder state dict

SAM's mask decoder turns a box into a mask in two parts: a transformer (prompt tokens x image embedding) that
yields the mask token and the upscaled image embedding, then the hypernetwork MLP (`output_hypernetworks_mlps.0`)
that turns the mask token into 32 per-pixel weights, whose product with the upscaled embedding is the mask's
logits. Only the hypernetwork is trained (FineTuneParams.decoder_tuned: its bias, its last layer or all of it),
so the first part does not depend on what is trained: :func:`decoder_activations` runs it once per (signed object,
jittered box), batched and without gradients, and keeps the mask token and the upscaled embedding average-pooled
to 64 x 64 (logits are linear in it, so pooled logits are the pooled full-resolution logits). Each training
step is then only the MLP and one matrix product: hundreds of steps take seconds.

A box is the object's bounding box grown by a random margin of up to `box_jitter` of its size per side
(refinement's boxes come from coarse components that are often larger than the object) and shifted by up to a
tenth of its size. A quarter of each object's boxes is held out (FineTuneParams.decoder_held_out "boxes";
"objects": every box of a quarter of the signed objects, at least one, so the check is on an object the weights
never saw, and the other objects' boxes all train): every `CHECK_EVERY` steps their loss (BCE + Dice against the
signed mask) is measured, and the weights with the lowest held-out loss are kept (the untuned ones when no step
beats them); training stops after `PATIENCE` checks without a better one.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .training_config import FineTuneParams
from .feature_adapter import Adam
from .progress import Progress
from .sam_decoder import transformer_part
from .sam_prompt import SIDE, PlaneEmbedding

TUNED = "output_hypernetworks_mlps.0."
"""The prefix of every decoder parameter Fine-tune may train (and a bank saves); the rest stay frozen."""

TUNED_PARTS = {"mlp": TUNED, "last": TUNED + "layers.2.", "bias": TUNED + "layers.2.bias"}
"""FineTuneParams.decoder_tuned -> the prefix trained: the whole hypernetwork MLP (~140k weights), its last layer
(32 x 256 + 32) or only that layer's bias (32 weights: a shift of the mask's per-pixel weights; PerSAM-F size)."""

POOL = 4  # the cached upscaled embedding and the targets are average-pooled by this: 256 -> 64 per side
BOX_BATCH = 8  # jittered boxes decoded per call while caching
HELD_OUT = 0.25  # share of each object's boxes held out to choose the weights
CHECK_EVERY = 10  # steps between checks on the held-out boxes
PATIENCE = 5  # checks without a better held-out loss before training stops


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


@dataclass
class DecoderActivations:
    """What the frozen part of the decoder gives for N (signed object, jittered box) pairs, s = 256 / POOL:
    tokens (N, 256) float32, the single-mask token after the transformer; upscaled (N, 32, s, s) float32, the
    upscaled image embedding pooled; target (N, s, s) float32, the share of each cell inside the signed mask;
    valid (N, s, s) float32, the share inside the plane (not padding); held_out (N,) bool, boxes kept to choose."""

    tokens: torch.Tensor
    upscaled: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    held_out: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)


def _pooled_target(mask: np.ndarray, embedding: PlaneEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) bool -> ((s, s) share inside the mask, (s, s) share inside the plane) in the padded input frame."""
    h, w = embedding.resized
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(h, w), mode="bilinear",
                      align_corners=False)
    target = F.pad((m > 0.5).float(), (0, SIDE - w, 0, SIDE - h))
    valid = F.pad(torch.ones(1, 1, h, w), (0, SIDE - w, 0, SIDE - h))
    return F.avg_pool2d(target, POOL)[0, 0], F.avg_pool2d(valid, POOL)[0, 0]


@torch.no_grad()
def _frozen_part(decoder, prompt_encoder, features: torch.Tensor, boxes: torch.Tensor):
    """The decoder up to its hypernetwork (MaskDecoder.predict_masks' first half) for B boxes on one plane.

    features: (1, 256, 64, 64); boxes: (B, 4) in the padded 256 frame. Returns ((B, 256) mask token of the
    single-mask output, (B, 32, 256 / POOL, 256 / POOL) upscaled embedding, pooled)."""
    sparse, dense = prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
    src = features.expand(len(boxes), -1, -1, -1) + dense
    _, token, upscaled = transformer_part(decoder, prompt_encoder.get_dense_pe(), src, sparse)
    return token, F.avg_pool2d(upscaled, POOL)


def decoder_activations(prompter, examples: Sequence[tuple[PlaneEmbedding, np.ndarray]], params: FineTuneParams,
                        rng: random.Random) -> Generator[Progress, None, DecoderActivations | None]:
    """Run the frozen part of the decoder once for `params.decoder_boxes` jittered boxes of every example
    ((embedding with (1, 256, 64, 64) features, (H, W) bool mask of one signed object)); yields Progress
    (done 0: caching), returns the activations (None: no example with a mask)."""
    decoder, prompt_encoder, device = prompter.model.mask_decoder, prompter.model.prompt_encoder, prompter.device
    examples = [(e, m) for e, m in examples if m.any()]
    if not examples:
        return None
    n_boxes = max(2, params.decoder_boxes)
    n_held = max(1, round(HELD_OUT * n_boxes))
    held_objects = set()  # params.decoder_held_out "objects": every box of these examples is held out
    if params.decoder_held_out == "objects" and len(examples) > 1:
        held_objects = set(rng.sample(range(len(examples)), max(1, round(HELD_OUT * len(examples)))))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "upscaled", "target", "valid", "held_out")}
    for n, (embedding, mask) in enumerate(examples):
        boxes = np.stack([jittered_box(mask, rng, params.box_jitter) for _ in range(n_boxes)]) * embedding.scale
        boxes = torch.from_numpy(boxes.astype(np.float32)).to(device)
        features = embedding.features.float().to(device)
        for start in range(0, n_boxes, BOX_BATCH):
            token, upscaled = _frozen_part(decoder, prompt_encoder, features, boxes[start:start + BOX_BATCH])
            parts["tokens"].append(token.float().cpu())
            parts["upscaled"].append(upscaled.float().cpu())
        target, valid = _pooled_target(mask, embedding)
        parts["target"].append(target.expand(n_boxes, -1, -1))
        parts["valid"].append(valid.expand(n_boxes, -1, -1))
        parts["held_out"].append(_held_out_boxes(n_boxes, n_held, n in held_objects, bool(held_objects)))
        yield Progress(0, params.decoder_steps, f"LiteMedSAM decoder: boxes of signed object {n + 1} of "
                       f"{len(examples)} decoded")
    return DecoderActivations(**{k: torch.cat(v) for k, v in parts.items()})


def _held_out_boxes(n_boxes: int, n_held: int, object_held: bool, objects_held: bool) -> torch.Tensor:
    """(n_boxes,) bool: which of one object's boxes are held out. Holding out objects: all boxes of a held object,
    none of the others. Holding out boxes: the last `n_held` boxes of every object."""
    if objects_held:
        return torch.full((n_boxes,), object_held)
    return torch.arange(n_boxes) >= n_boxes - n_held


def _loss(mlp: torch.nn.Module, acts: DecoderActivations, index: torch.Tensor) -> torch.Tensor:
    """Mean over the boxes `index` of BCE + soft Dice of the pooled logits against the pooled target (in-plane)."""
    weights = mlp(acts.tokens[index])  # (B, 32)
    logits = torch.einsum("bc,bchw->bhw", weights, acts.upscaled[index])
    target, valid = acts.target[index], acts.valid[index]
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum((1, 2))
    bce = bce / valid.sum((1, 2)).clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
    return (bce + dice).mean()


def train_hypernetwork(original: torch.nn.Module, acts: DecoderActivations, params: FineTuneParams,
                       rng: random.Random) -> Generator[Progress, None, tuple[dict[str, torch.Tensor], list[float], int]]:
    """Train a float32 CPU copy of the hypernetwork MLP `original` on the cached activations; yields Progress per
    step. Returns (the kept MLP's state dict, the training losses, the step whose weights were kept: 0 = untuned)."""
    mlp = copy.deepcopy(original).float().cpu()
    prefix = TUNED_PARTS[params.decoder_tuned][len(TUNED):]
    tuned = []
    for name, p in mlp.named_parameters():
        p.requires_grad_(name.startswith(prefix))
        if p.requires_grad:
            tuned.append(p)
    start = [p.detach().clone() for p in tuned]
    train = torch.nonzero(~acts.held_out).flatten().tolist()
    held = torch.nonzero(acts.held_out).flatten()
    optimiser = Adam(tuned, lr=params.decoder_learning_rate)
    with torch.no_grad():
        best = float(_loss(mlp, acts, held))
    best_state, best_step, stale, losses = copy.deepcopy(mlp.state_dict()), 0, 0, []
    for step in range(1, params.decoder_steps + 1):
        index = torch.tensor(rng.sample(train, min(len(train), params.decoder_batch)))
        optimiser.zero_grad()
        loss = _loss(mlp, acts, index)
        if params.decoder_decay > 0:  # an L2 pull towards LiteMedSAM's own weights
            loss = loss + params.decoder_decay * sum(((p - s) ** 2).sum() for p, s in zip(tuned, start))
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        yield Progress(step, params.decoder_steps, f"LiteMedSAM decoder step {step} of {params.decoder_steps}",
                       loss=losses[-1])
        if step % CHECK_EVERY == 0 or step == params.decoder_steps:
            with torch.no_grad():
                checked = float(_loss(mlp, acts, held))
            if checked < best - 1e-4:
                best, best_state, best_step, stale = checked, copy.deepcopy(mlp.state_dict()), step, 0
            else:
                stale += 1
                if stale >= PATIENCE:
                    break
    return best_state, losses, best_step


def tune_decoder(prompter, examples: Sequence[tuple[PlaneEmbedding, np.ndarray]], params: FineTuneParams,
                 ) -> Generator[Progress, None, tuple[dict[str, torch.Tensor], list[float], int]]:
    """Train the mask decoder's single-mask hypernetwork on `examples`; yields Progress(step, steps, loss=...).

    prompter: has .model.mask_decoder, .model.prompt_encoder and .device (core/sam_prompt.BoxPrompter).
    examples: (embedding with (1, 256, 64, 64) features, (H, W) bool mask of one signed object) pairs.
    Returns (the decoder's full state dict with the kept hypernetwork, detached copies on the decoder's device;
    the training losses; the step whose weights were kept, 0: none beat the untuned ones on the held-out boxes).
    The decoder itself is not changed: load the state where it should apply.
    """
    decoder = prompter.model.mask_decoder
    rng = random.Random(params.seed)
    state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    acts = yield from decoder_activations(prompter, examples, params, rng)
    if acts is None or params.decoder_steps <= 0:
        return state, [], 0
    mlp_state, losses, kept = yield from train_hypernetwork(decoder.output_hypernetworks_mlps[0], acts, params, rng)
    for name, value in mlp_state.items():
        state[TUNED + name] = value.to(state[TUNED + name].device, state[TUNED + name].dtype)
    return state, losses, kept
