"""Two encoders read as one: the cosine of the combined features is the weighted mean of each encoder's cosine.

Each part's stride-8 map is L2-normalised per cell (EfficientNet-Lite's fused map is not: it is three unit maps)
and scaled by the square root of its weight (weights sum to 1), so the concatenated cell has unit norm and, for two
cells x and y, x . y = w_a (x_a . y_a) + w_b (x_b . y_b). Masked average pooling, local prototypes and the matching
then work on it unchanged; a prototype bank records the combined name and channel count like any encoder's.

The parts see the input each was trained on: this encoder takes pixels in [0, 1] (UNIT_RANGE) and applies each
part's own normalisation (ImageNet's for EfficientNet-Lite, none for LiteMedSAM) before calling it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..normalization import UNIT_RANGE
from .base import Encoder

LITE0_LITEMEDSAM = "efficientnet-lite0+litemedsam"  # the registry's combined encoder (core/encoders/__init__.py)


class CombinedEncoder(Encoder):
    """forward: (B, 3, H, W) pixels in [0, 1] -> (B, sum C_i, ceil(H / 8), ceil(W / 8)), unit norm per cell.

    parts: the encoders (all stride 8, on the native grid); weights: one per part, positive, summing to 1 (the share
    of each part's cosine in the combined one); name: the registry's name (it keys feature caches)."""

    normalization = UNIT_RANGE

    def __init__(self, parts: Sequence[Encoder], weights: Sequence[float], name: str):
        super().__init__()
        if len(parts) != len(weights) or len(parts) < 2:
            raise ValueError("A combined encoder needs two or more parts, each with its weight.")
        if min(weights) <= 0 or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"The weights of a combined encoder must be positive and sum to 1, not {tuple(weights)}.")
        if any(part.stride != self.stride for part in parts):
            raise ValueError("Every part of a combined encoder must give stride-8 features.")
        self.parts = torch.nn.ModuleList(parts)
        self.register_buffer("_scales", torch.tensor([w ** 0.5 for w in weights]), persistent=False)
        self.name = name
        self.feature_dim = sum(part.feature_dim for part in parts)
        self.weights_id = "+".join(f"{part.weights_id}*{w:g}" for part, w in zip(parts, weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for part, scale in zip(self.parts, self._scales):
            features = F.normalize(part(part.normalization.apply(x)), dim=1)  # lite0's is sqrt(3) long
            maps.append(features * scale.to(features.dtype))
        size = maps[0].shape[-2:]
        if any(m.shape[-2:] != size for m in maps):
            raise ValueError(f"The parts of {self.name} gave feature maps of different sizes: "
                             f"{[tuple(m.shape[-2:]) for m in maps]}.")
        return torch.cat(maps, dim=1)
