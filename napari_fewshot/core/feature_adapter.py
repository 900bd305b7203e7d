"""A light adapter on the cached encoder features, trained on the signed slices in seconds (no encoder pass).

    adapter = yield from train_adapter(features, targets, n_classes, seg, params)   # features: cached, raw
    cache.set_adapter(adapter)        # FeatureCache.get(i) now returns adapter(raw features of slice i)

The adapter is residual: by default a per-channel gain and shift, f -> f * (1 + s) + b (FineTuneParams.adapter_form
"scale", 2C weights), or a 1x1 projection f -> f + W f + b ("projection", C^2 + C); initialised to the identity
(an untrained adapter changes nothing). It is trained with PANet's prototype loss across the signed slices:
each step holds one signed slice out as the query, pools K-way prototypes (the segmenter's own mode: global
and local) from the other signed slices through the adapter, and scores the query's cross-entropy plus
PANet's alignment loss (prototypes from the query's prediction must segment the support back); the query is
under feature-space augmentation (channel dropout and noise). An L2 pull of W towards zero keeps the adapter
near the identity. Fine-tune trains it only with FineTuneParams.adapter_min_signed (3) or more signed slices
(core/finetune.py): in a trial one slice as its own query lowered CHAOS kidney Dice 0.741 -> 0.550, and two
slices 0.808 -> 0.757, while three and four raised it (BENCHMARKS.md, "Fine-tune").
"""

from __future__ import annotations

import random
from typing import Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import SegmentationParams
from .training_config import FineTuneParams
from .predict import class_similarity
from .progress import Progress
from .prototypes import build_prototypes
from .support import IGNORE


ADAPTER_FORMS = ("scale", "projection")


class FeatureAdapter(torch.nn.Module):
    """A residual adapter over channels: features (C, h, w) or (B, C, h, w) in, the same shape out.

    form "scale": f -> f * (1 + s) + b with s, b of shape (C,) (2C weights: a per-channel gain and shift);
    form "projection": f -> f + W f + b with W (C, C), a 1x1 convolution. Both start as the identity."""

    def __init__(self, channels: int, form: str = "scale"):
        super().__init__()
        if form not in ADAPTER_FORMS:
            raise ValueError(f"adapter form {form!r} is not one of {ADAPTER_FORMS}")
        self.form = form
        if form == "scale":
            self.scale = torch.nn.Parameter(torch.zeros(channels))
            self.bias = torch.nn.Parameter(torch.zeros(channels))
        else:
            self.proj = torch.nn.Conv2d(channels, channels, 1)
            torch.nn.init.zeros_(self.proj.weight)
            torch.nn.init.zeros_(self.proj.bias)

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0]) if self.form == "scale" else self.proj.in_channels

    def weight_penalty(self) -> torch.Tensor:
        """Squared norm of the multiplicative weights (s or W): the L2 pull towards the identity."""
        return (self.scale if self.form == "scale" else self.proj.weight).pow(2).sum()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features[None] if features.ndim == 3 else features
        if self.form == "scale":
            s, b = self.scale.to(x.dtype)[:, None, None], self.bias.to(x.dtype)[:, None, None]
            out = x * (1 + s) + b
        else:
            out = x + self.proj(x.to(self.proj.weight.dtype))
        return out[0] if features.ndim == 3 else out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "FeatureAdapter":
        """An adapter with the weights of `state` (its state_dict(), e.g. from a bank); the form follows its keys."""
        if "scale" in state:
            adapter = cls(int(state["scale"].shape[0]), "scale")
        else:
            adapter = cls(int(state["proj.weight"].shape[0]), "projection")
        adapter.load_state_dict({k: v.float() for k, v in state.items()})
        return adapter.eval()


TRAIN_MAX_LOCAL = 96
"""Local prototypes per class and slice a training step pools at most (matching costs cells x prototypes x C,
forward and backward: the segmenter's own cap of thousands makes a CPU step seconds long)."""


class Adam:
    """Adam (Kingma & Ba; torch.optim.Adam's update, no weight decay) for a handful of tensors, without importing
    torch.optim: its first use imports torch._dynamo, seconds of a Fine-tune that itself takes seconds."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))


def _grid_target(target: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) int16 target (0 bg, 1..K, IGNORE) -> (h', w') long, nearest-resized to `size`."""
    t = torch.from_numpy(target.astype(np.int64))[None, None].float() + 1
    return F.interpolate(t, size=size, mode="nearest")[0, 0].long() - 1


def _augment(features: torch.Tensor, rng: torch.Generator, strength: float) -> torch.Tensor:
    """(C, h, w) features with channel dropout (p = strength / 2) and Gaussian noise (strength x their std)."""
    if strength <= 0:
        return features
    keep = (torch.rand(features.shape[0], 1, 1, generator=rng) >= strength / 2).to(features.dtype)
    noise = torch.randn(features.shape, generator=rng).to(features.dtype) * features.std() * strength
    return features * keep / (1 - strength / 2) + noise


def train_adapter(features: dict[int, torch.Tensor], targets: dict[int, np.ndarray], n_classes: int,
                  seg: SegmentationParams, params: FineTuneParams, max_local: int = 4096,
                  ) -> Generator[Progress, None, tuple[FeatureAdapter, list[float]]]:
    """Train a FeatureAdapter on the signed slices; yields Progress(step, steps, loss=...).

    features: slice index -> (C, h, w) float raw cached features; targets: slice index -> (H, W) int16 with
    0 = background, k = class index 1..n_classes, IGNORE = unknown (SupportSet.targets). Returns the adapter
    (eval mode, on the features' device) and the losses. Stopping early keeps the steps taken.
    """
    indices = sorted(features)
    channels = features[indices[0]].shape[0]
    device = features[indices[0]].device
    adapter = FeatureAdapter(channels, params.adapter_form).to(device)
    grid = tuple(int(s) * params.target_scale for s in features[indices[0]].shape[-2:])
    small = {i: _grid_target(targets[i], tuple(min(a, b) for a, b in zip(grid, targets[i].shape))).to(device)
             for i in indices}
    # queries: signed slices showing something the others can teach (a class, or background next to a class)
    rng, generator = random.Random(params.seed), torch.Generator().manual_seed(params.seed)
    optimiser = Adam(adapter.parameters(), lr=params.adapter_learning_rate)
    class_ids = list(range(1, n_classes + 1))
    losses: list[float] = []
    adapter.train()
    for step in range(params.adapter_steps):
        query = rng.choice(indices)
        others = [i for i in indices if i != query] or [query]
        support = rng.sample(others, min(len(others), params.adapter_support))
        f_q = _augment(features[query], generator, params.feature_noise)
        f_s = [adapter(features[i]) for i in support]
        t_s = [small[i] for i in support]
        if not set(range(n_classes + 1)) <= set(torch.cat([t.unique() for t in t_s]).tolist()):
            continue  # some class (or the background) has nothing to pool a prototype from
        protos = build_prototypes(f_s, t_s, class_ids, seg.prototype_mode, seg.local_grid, seg.local_coverage,
                                  min(max_local, TRAIN_MAX_LOCAL), seg.seed + step)
        a_q = adapter(f_q)[None]
        t_q = small[query]
        logits = F.interpolate(seg.scale * class_similarity(a_q, protos), size=t_q.shape, mode="bilinear",
                               align_corners=False)
        loss = F.cross_entropy(logits, t_q[None], ignore_index=IGNORE)
        if params.alignment_weight > 0:
            predicted = logits.argmax(1)[0].detach()
            if len(predicted.unique()) == n_classes + 1:  # every class predicted somewhere: it can segment back
                back = build_prototypes([a_q[0]], [predicted], class_ids, "global")
                for f, t in zip(f_s, t_s):
                    logits_s = F.interpolate(seg.scale * class_similarity(f[None], back), size=t.shape,
                                             mode="bilinear", align_corners=False)
                    loss = loss + params.alignment_weight / len(f_s) * F.cross_entropy(
                        logits_s, t[None], ignore_index=IGNORE)
        loss = loss + params.adapter_decay * adapter.weight_penalty()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        yield Progress(step + 1, params.adapter_steps, f"feature adapter step {step + 1} of {params.adapter_steps}",
                       loss=losses[-1])
    return adapter.eval(), losses


def signed_features(get, indices: Sequence[int]) -> dict[int, torch.Tensor]:
    """Slice index -> (C, h, w) float raw features from `get` (FeatureCache.get_raw), detached."""
    return {i: get(i).detach().float() for i in indices}
