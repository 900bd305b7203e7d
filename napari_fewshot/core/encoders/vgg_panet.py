"""PANet's encoder (Wang et al., ICCV 2019): VGG16's conv layers with pool4 at stride 1, conv5 dilated
by 2 and no ReLU after the last conv, so features come out at stride 8 with 512 channels.

ImageNet weights are torchvision's `vgg16-397923af.pth`. They are looked for, in order, at the
path given by the caller, at $NAPARI_FEWSHOT_VGG16_WEIGHTS, in torch's hub cache, and finally
downloaded; offline without the file, the error says how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ...errors import FewShotError
from ..normalization import IMAGENET
from .base import Encoder

WEIGHTS_FILE = "vgg16-397923af.pth"
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE
WEIGHTS_ENV = "NAPARI_FEWSHOT_VGG16_WEIGHTS"

# (channels, convs) per VGG16 block; torchvision's `features` indices follow from this layout.
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VGG16PANetEncoder(Encoder):
    """forward: (B, 3, H, W) ImageNet-normalised -> (B, 512, ceil(H/8), ceil(W/8))."""

    name = "vgg16-panet"
    feature_dim = 512
    normalization = IMAGENET

    def __init__(self, pretrained: bool = True, weights_path: str | os.PathLike | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for block, (channels, convs) in enumerate(_BLOCKS):
            dilation = 2 if block == 4 else 1
            for conv in range(convs):
                layers.append(nn.Conv2d(c_in, channels, 3, padding=dilation, dilation=dilation))
                last = block == 4 and conv == convs - 1
                layers.append(nn.Identity() if last else nn.ReLU(inplace=True))
                c_in = channels
            if block < 3:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            elif block == 3:
                layers.append(nn.MaxPool2d(3, stride=1, padding=1))
        self.features = nn.Sequential(*layers)
        if pretrained:
            self._load_imagenet(weights_path)

    def _load_imagenet(self, weights_path: str | os.PathLike | None) -> None:
        path = find_vgg16_weights(weights_path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise FewShotError(f"The VGG16 weights file {path} could not be read ({type(err).__name__}).") from err
        conv_state = {k: v for k, v in state.items() if k.startswith("features.")}
        missing, unexpected = self.load_state_dict(conv_state, strict=False)
        if missing or unexpected:
            raise FewShotError(f"{path} does not hold torchvision VGG16 weights.")
        self.weights_id = Path(path).name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def weights_available() -> str | None:
    """None when torchvision's VGG16 weights are on this machine ($NAPARI_FEWSHOT_VGG16_WEIGHTS or torch's hub
    cache), else what is missing and how to provide it (never downloads)."""
    try:
        find_vgg16_weights(download=False)
    except FewShotError as err:
        return str(err)
    return None


def find_vgg16_weights(weights_path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return a local path to torchvision's VGG16 ImageNet weights, downloading them if possible."""
    candidates = [weights_path, os.environ.get(WEIGHTS_ENV)]
    for candidate in candidates:
        if candidate:
            if Path(candidate).is_file():
                return Path(candidate)
            raise FewShotError(f"The VGG16 weights file {candidate} does not exist.")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if cached.is_file():
        return cached
    how = (f"download {WEIGHTS_URL} on a machine with internet and pass it with --weights PATH, "
           f"set {WEIGHTS_ENV}=PATH, or copy it to {cached}")
    if not download:
        raise FewShotError(f"The VGG16 ImageNet weights are not on this machine; {how}.")
    try:
        torch.hub.load_state_dict_from_url(WEIGHTS_URL, progress=False, map_location="cpu")
    except Exception as err:
        raise FewShotError(f"The VGG16 ImageNet weights could not be downloaded (offline?); {how}.") from err
    return cached
