"""What every encoder promises."""

from __future__ import annotations

import torch
from torch import nn

from ..normalization import IMAGENET, InputNormalization


class Encoder(nn.Module):
    """Maps a batch of images, normalised as `normalization` says, to a stride-8 feature map.

    forward(x): x (B, 3, H, W) = normalization.apply(pixels in [0, 1]) -> (B, C, ceil(H / 8), ceil(W / 8)),
    C == self.feature_dim. `normalization` is what the encoder was trained on (ImageNet's unless the
    encoder says otherwise); every caller feeds it through core/normalization.py's to_encoder_input.
    `weights_id` names the weights the encoder was built with (file name or hash); with `name` it
    keys feature caches, so features from other weights are never reused.
    """

    name: str = "encoder"
    stride: int = 8
    feature_dim: int = 0
    weights_id: str = "random"
    normalization: InputNormalization = IMAGENET

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
