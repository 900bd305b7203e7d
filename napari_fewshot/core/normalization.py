"""Intensity normalisation: whatever the scanner wrote -> float32 in [0, 1] -> the encoder's input.

Normalisation is decided once per volume (not per slice), so a dark slice stays dark and the
encoder sees the same tissue with the same brightness on every slice. The last step, [0, 1] pixels to
what the encoder was trained on, is the encoder's own :class:`InputNormalization` (Encoder.normalization).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CT_WINDOW_HU = (-200.0, 300.0)  # abdominal soft tissue (level 50, width 500)


@dataclass(frozen=True)
class InputNormalization:
    """What an encoder was trained on: (pixel - mean) / std per RGB channel, pixels in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"An input normalisation needs 3 means and 3 positive stds, not {mean} and {std}.")
        object.__setattr__(self, "mean", mean)  # tuples of floats, so equal settings compare equal
        object.__setattr__(self, "std", std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) pixels in [0, 1] -> (B, 3, h, w) encoder input."""
        return (x - self._channels(self.mean, x)) / self._channels(self.std, x)

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) encoder input -> (B, 3, h, w) pixels (in [0, 1] unless augmented beyond it)."""
        return x * self._channels(self.std, x) + self._channels(self.mean, x)

    @staticmethod
    def _channels(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, device=like.device).view(1, 3, 1, 1)


IMAGENET = InputNormalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""The input of ImageNet-trained backbones (torchvision's convention)."""
UNIT_RANGE = InputNormalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
"""Pixels as they are, in [0, 1] (e.g. MedSAM and LiteMedSAM, which scale each image to [0, 1])."""


@dataclass(frozen=True)
class IntensityWindow:
    """Maps raw values to [0, 1]: (value - low) / (high - low), clipped. `modality` says which rule chose it."""

    low: float
    high: float
    modality: str

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(...) any dtype -> (...) float32 in [0, 1]; NaN and Inf become 0."""
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, handled next
            out = np.asarray(data, dtype=np.float32)
        out = np.nan_to_num(out, nan=self.low, posinf=self.high, neginf=self.low)
        span = max(self.high - self.low, 1e-6)
        return np.clip((out - self.low) / span, 0.0, 1.0, out=out.copy() if out is data else out)


def guess_modality(data: np.ndarray) -> str:
    """Return "us" for 8-bit data, "ct" for integer-valued data reaching below -500 (HU), else "mr"."""
    if data.dtype == np.uint8:
        return "us"
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
    if finite.size == 0:
        return "mr"
    sample = finite.ravel()[:: max(1, finite.size // 200_000)]
    if sample.min() < -500 and np.allclose(sample, np.round(sample)):
        return "ct"
    if sample.min() >= 0 and sample.max() <= 255 and np.allclose(sample, np.round(sample)) and sample.max() > 1:
        return "us"
    return "mr"


def intensity_window(data: np.ndarray, modality: str = "auto") -> IntensityWindow:
    """Choose the window for a whole volume.

    data: (S, H, W) or (S, H, W, C). "ct": fixed HU window; "us": 0..255; "mr": 0.5-99.5 percentiles
    of the finite voxels; "none": 0..1.
    """
    if modality == "auto":
        modality = guess_modality(data)
    if modality == "ct":
        return IntensityWindow(*CT_WINDOW_HU, "ct")
    if modality == "us":
        return IntensityWindow(0.0, 255.0 if data.dtype == np.uint8 or np.nanmax(data) > 1 else 1.0, "us")
    if modality == "none":
        return IntensityWindow(0.0, 1.0, "none")
    with np.errstate(over="ignore"):
        values = np.asarray(data, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return IntensityWindow(0.0, 1.0, modality)
    values = values.ravel()[:: max(1, values.size // 1_000_000)]
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:  # constant image: map it to mid-grey rather than divide by zero
        return IntensityWindow(float(low) - 0.5, float(low) + 0.5, modality)
    return IntensityWindow(float(low), float(high), modality)


def resized_shape(height: int, width: int, input_size: int | None) -> tuple[int, int]:
    """Size the encoder sees: longer side scaled to `input_size` (None: unchanged), both sides >= 32."""
    if input_size is None:
        scale = 1.0
    else:
        scale = input_size / max(height, width)
    return max(32, round(height * scale)), max(32, round(width * scale))


def to_encoder_input(slices: np.ndarray, input_size: int | None, normalization: InputNormalization) -> torch.Tensor:
    """Windowed slices -> the encoder's input batch (`normalization`: the encoder's, Encoder.normalization).

    slices: (B, H, W) or (B, H, W, 3) float in [0, 1].
    Returns (B, 3, h, w) float32 with (h, w) = resized_shape(H, W, input_size).
    """
    x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)[:, :3]
    h, w = resized_shape(x.shape[-2], x.shape[-1], input_size)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < x.shape[-2])
    return normalization.apply(x).contiguous()
