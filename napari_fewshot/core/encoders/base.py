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
    keys feature caches, so features from other weights are never reused. `grid` names where the cells sit
    on the input: "native" (as the network gives them; VGG's unpadded pooling already centres cell i on 8i + 3.5)
    or "centred" (moved so that cell i describes input pixel 8i + 3.5, as downstream code assumes;
    core/encoders/efficientnet_lite.py). It keys feature caches too (:meth:`signature`).
    """

    name: str = "encoder"
    stride: int = 8
    feature_dim: int = 0
    weights_id: str = "random"
    normalization: InputNormalization = IMAGENET
    grid: str = "native"

    def signature(self) -> str:
        """What features of this encoder are keyed by: name, weights and grid."""
        suffix = "" if self.grid == "native" else f":{self.grid}"
        return f"{self.name}:{self.weights_id}{suffix}"

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
