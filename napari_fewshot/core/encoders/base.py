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
    core/encoders/efficientnet_lite.py). It keys feature caches too (:func:`encoder_signature`).
    """

    name: str = "encoder"
    stride: int = 8
    feature_dim: int = 0
    weights_id: str = "random"
    normalization: InputNormalization = IMAGENET
    grid: str = "native"

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def encoder_signature(encoder) -> str:
    """What features of `encoder` are keyed by (feature caches, on disk too): name, weights and grid; an encoder on
    the native grid (or one that does not say) keeps the key it had before grids existed."""
    grid = getattr(encoder, "grid", "native")
    return f"{encoder.name}:{encoder.weights_id}" + ("" if grid == "native" else f":{grid}")
