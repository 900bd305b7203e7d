"""Folders of 2D images: listing them in natural order, and BUSI-style ``NAME_mask*.png`` masks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ._arrays import read_error
from .images import read_pil_image
from .naming import MASK_MARK

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def natural_key(name: str) -> list:
    """Sort key in which digit runs compare as numbers: ``"a (2)"`` < ``"a (10)"``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """PNG / JPEG / TIFF files directly in ``folder``, natural sort order, mask files (``*_mask*``) left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise read_error(folder, "the folder does not exist")
    images = [path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
              and not is_mask_file_name(path.name)]
    return sorted(images, key=lambda p: natural_key(p.name))


def is_mask_file_name(name: str) -> bool:
    """Whether the file `name` is a BUSI-style mask, not an image: a PNG / JPEG / TIFF whose stem holds
    ``_mask`` (``NAME_mask.png``, ``NAME_mask_1.png``). Image folders and batch cohorts both skip them."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and f"_{MASK_MARK}" in path.stem.lower()


def busi_mask_paths(image_path: str | os.PathLike) -> list[Path]:
    """``NAME_mask.png``, ``NAME_mask_1.png`` ... beside ``NAME.png``, in natural order."""
    image_path = Path(image_path)
    pattern = re.compile(re.escape(image_path.stem) + f"_{MASK_MARK}" + r"(_\d+)?\.png", re.IGNORECASE)
    folder = image_path.parent
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: natural_key(p.name))


def read_busi_mask(image_path: str | os.PathLike) -> np.ndarray:
    """Union of all BUSI lesion masks of one image.

    Args:
        image_path: ``.../NAME.png``; its masks are ``NAME_mask.png`` and ``NAME_mask_K.png``.

    Returns:
        ``(H, W)`` bool, True where any mask file is non-zero.
    """
    mask_paths = busi_mask_paths(image_path)
    if not mask_paths:
        raise read_error(image_path, "no mask file named like 'NAME_mask.png' lies beside it")
    union = None
    for path in mask_paths:
        volume = read_pil_image(path, "png")
        mask = volume.data[0] != 0
        if mask.ndim == 3:  # colour mask: any non-zero channel
            mask = mask.any(axis=-1)
        if union is None:
            union = mask
        elif mask.shape != union.shape:
            raise read_error(path, f"this mask is {mask.shape} but {mask_paths[0].name} is {union.shape}")
        else:
            union |= mask
    _check_image_size(Path(image_path), union.shape)
    return union


def _check_image_size(image_path: Path, mask_shape: tuple[int, ...]) -> None:
    """Fail when the image exists and its (H, W) differs from the masks'."""
    if not image_path.is_file():
        return
    try:
        with Image.open(image_path) as img:
            width, height = img.size
    except Exception:
        return  # reading the image itself reports that problem
    if (height, width) != tuple(mask_shape):
        raise read_error(image_path, f"the image is {(height, width)} but its masks are {tuple(mask_shape)}")
