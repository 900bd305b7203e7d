"""The image being segmented, as a stack of 2D slices in [0, 1].

A CT/MR volume (S, H, W), an RGB stack (S, H, W, 3), one 2D image, or a set of 2D images of
different sizes (ultrasound) all become the same thing: slices indexed 0..S-1, each windowed with
one intensity window chosen for the whole stack. A set mixing grey and colour images (some colour
Doppler) is colour: its grey images get three equal channels, which the encoder sees exactly as grey.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..errors import FewShotError
from ..io._arrays import MIN_SIDE
from .normalization import IntensityWindow, intensity_window


class ImageStack:
    """Slices of one image; `slice(i)` -> (H_i, W_i) or (H_i, W_i, 3) float32 in [0, 1].

    image: (S, H, W) | (S, H, W, 3|4) | (H, W) | (H, W, 3|4) array, or a sequence of 2D (H_i, W_i[, 3|4]) arrays.
    rgb:   None guesses (a last axis of 3 or 4 is colour), True/False forces it.
    """

    def __init__(self, image: np.ndarray | Sequence[np.ndarray], modality: str = "auto", rgb: bool | None = None):
        if isinstance(image, np.ndarray) or hasattr(image, "__array__") and not isinstance(image, (list, tuple)):
            self._slices = _split_array(np.asarray(image), rgb)
            self.is_volume = True
        else:
            self._slices = [_check_plane(np.asarray(plane), rgb, index) for index, plane in enumerate(image)]
            self.is_volume = False
            if not self._slices:
                raise FewShotError("The image set is empty.")
        self.is_rgb = any(s.ndim == 3 for s in self._slices)
        if self.is_rgb:  # a set mixing grey and colour images: grey ones get three equal channels (lossless)
            self._slices = [s if s.ndim == 3 else np.repeat(s[..., None], 3, axis=-1) for s in self._slices]
        self.window: IntensityWindow = intensity_window(_sample(self._slices), modality)
        self._signature: str | None = None

    def __len__(self) -> int:
        return len(self._slices)

    @property
    def is_3d(self) -> bool:
        """A volume of several slices (its defaults are a volume's), not a 2D image (one slice) or an image set."""
        return self.is_volume and len(self._slices) > 1

    def shape_of(self, index: int) -> tuple[int, int]:
        return tuple(self._slices[index].shape[:2])

    def raw(self, index: int) -> np.ndarray:
        return self._slices[index]

    def slice(self, index: int) -> np.ndarray:
        return self.window.apply(self._slices[index])

    def signature(self) -> str:
        """Hash of every pixel, the shapes, dtypes and the window (computed once; ~1 s per GB)."""
        if self._signature is None:
            digest = hashlib.blake2b(repr(self.window).encode(), digest_size=16)
            for plane in self._slices:
                digest.update(repr((plane.shape, str(plane.dtype))).encode())
                digest.update(np.ascontiguousarray(plane).data)
            self._signature = digest.hexdigest()
        return self._signature

    def flipped(self) -> "ImageStack":
        """The same slices mirrored left-right (each (H_i, W_i[, 3]) plane's columns reversed), with this stack's
        intensity window (not one estimated again): a view for core/augment.py."""
        mirror = object.__new__(ImageStack)
        mirror.__dict__.update(self.__dict__)
        mirror._slices = [plane[:, ::-1] for plane in self._slices]
        mirror._signature = None
        return mirror


def _split_array(image: np.ndarray, rgb: bool | None) -> list[np.ndarray]:
    if image.size == 0:
        raise FewShotError("The image is empty (it has a zero-length axis).")
    colour = image.shape[-1] in (3, 4) and image.ndim >= 3 if rgb is None else rgb
    spatial = image.ndim - (1 if colour else 0)
    if spatial == 2:
        image = image[None]
    elif spatial != 3:
        raise FewShotError(
            f"Images of shape {image.shape} are not supported: give a 2D image or a 3D volume "
            f"(choose one time point or channel of 4D data first)."
        )
    return [_check_plane(plane, colour, index) for index, plane in enumerate(image)]


def _check_plane(plane: np.ndarray, rgb: bool | None, index: int) -> np.ndarray:
    colour = plane.ndim == 3 and plane.shape[-1] in (3, 4) if rgb is None else rgb
    if plane.ndim != (3 if colour else 2):
        raise FewShotError(f"Image {index} has shape {plane.shape}; expected a 2D grey or RGB image.")
    if colour:
        plane = plane[..., :3]
        if np.array_equal(plane[..., 0], plane[..., 1]) and np.array_equal(plane[..., 0], plane[..., 2]):
            plane = plane[..., 0]  # RGB with equal channels is grey
    if not (np.issubdtype(plane.dtype, np.number) or plane.dtype == bool) or np.iscomplexobj(plane):
        raise FewShotError(f"Image {index} holds {plane.dtype} values, not numbers.")
    if min(plane.shape[:2]) < MIN_SIDE:
        raise FewShotError(f"Image {index} is {plane.shape[0]} x {plane.shape[1]} pixels; at least {MIN_SIDE} are needed.")
    return plane


def _sample(slices: list[np.ndarray]) -> np.ndarray:
    """About 2M values from across the stack (flat, dtype kept), for choosing the window."""
    step = max(1, sum(s.size for s in slices) // 2_000_000)
    return np.concatenate([s.reshape(-1)[::step] for s in slices])
