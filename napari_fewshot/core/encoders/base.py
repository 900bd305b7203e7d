"""What every encoder promises."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """Maps an ImageNet-normalised batch to a stride-8 feature map.

    forward(x): x (B, 3, H, W) -> (B, C, ceil(H / 8), ceil(W / 8)), C == self.feature_dim.
    `weights_id` names the weights the encoder was built with (file name or hash); with `name` it
    keys feature caches, so features from other weights are never reused.
    """

    name: str = "encoder"
    stride: int = 8
    feature_dim: int = 0
    weights_id: str = "random"

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
