"""Folders of 2D images of different sizes (ultrasound) as one *image set*: read, pad, crop, write masks.

A set is kept as a list of planes, one per file, each at its own size. To be shown as one napari
layer it is *padded*: every plane goes into the top-left corner of an ``(N, Hmax, Wmax)`` array
(``(N, Hmax, Wmax, 3)`` for colour), the rest is 0. Top-left anchoring keeps a pixel's row and
column the same in the plane and in the padded stack, so cropping ``stack[i, :H_i, :W_i]`` gives the
plane back exactly; padding never reaches the encoder and is never written.

Channel rule: a file stored as RGB with three equal channels is grey. When any file of the set has
unequal channels (colour Doppler), the whole set is RGB and its grey images get their grey value in
all three channels: nothing is lost (the encoder sees a grey image as three equal channels anyway).

Masks are written one per image as ``NAME_mask.png`` (BUSI layout), at the image's own size; heatmaps
as ``NAME_heatmap_classK_CLASS.tif`` (names: :mod:`.naming`). This module imports neither napari, Qt
nor torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ReadError, WriteError
from ._arrays import MIN_SIDE, read_error
from .folders import busi_mask_paths, list_images, read_busi_mask
from .formats import format_named
from .naming import heatmap_name, heatmap_prefix, mask_file_name
from .readers import read_volume
from .writers import write_image, write_mask

MASK_EXTENSION = format_named("png").extension  # BUSI's layout: NAME_mask.png beside NAME.png
HEATMAP_EXTENSION = format_named("tiff").extension  # float32 at each image's own size
BINARY_VALUE = 255  # one class in the whole set: masks are 0/255 (BUSI convention)


@dataclass
class ImageSetInfo:
    """What a padded image-set layer needs besides its pixels (kept in ``layer.metadata``).

    folder: the folder the images came from (None when built from arrays).
    names: file names in set order (``"benign (1).png"``); shapes: ``(H_i, W_i)`` of each image.
    channel_mode: ``"grey"`` or ``"rgb"``; colour_images: names of the files with unequal channels.
    """

    folder: str | None
    names: list[str]
    shapes: list[tuple[int, int]]
    channel_mode: str = "grey"
    colour_images: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"{len(self.names)} names but {len(self.shapes)} shapes")
        self.shapes = [(int(h), int(w)) for h, w in self.shapes]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(Hmax, Wmax)``: the size of the padded planes."""
        return padded_shape(self.shapes)

    def channel_note(self) -> str:
        """One sentence telling the user which channel mode is used and why."""
        n, k = len(self.names), len(self.colour_images)
        if self.channel_mode == "grey":
            return "The set is grey (RGB files with equal channels are read as grey)."
        if k == n:
            return "The set is kept as RGB: its images have colour (unequal RGB channels, e.g. Doppler)."
        return (f"{k} of {n} images have colour (e.g. Doppler; first: '{self.colour_images[0]}'): the set is kept "
                "as RGB, and its grey images are shown with equal channels.")


@dataclass
class ImageSet:
    """A folder of 2D images read as one set.

    planes: ``(H_i, W_i)`` grey or ``(H_i, W_i, 3)`` RGB arrays, one dtype for all.
    masks: per image, the ``(H_i, W_i)`` bool union of its ``NAME_mask*.png`` files, or None.
    skipped: one sentence per image file that could not be used.
    """

    info: ImageSetInfo
    planes: list[np.ndarray]
    masks: list[np.ndarray | None]
    skipped: list[str] = field(default_factory=list)

    def padded(self) -> np.ndarray:
        """``(N, Hmax, Wmax)`` or ``(N, Hmax, Wmax, 3)``: the planes padded with 0 (see :func:`pad_planes`)."""
        return pad_planes(self.planes)

    def padded_masks(self) -> np.ndarray | None:
        """``(N, Hmax, Wmax)`` uint8 (1 = lesion, 0 elsewhere and for images without a mask), or None when
        no image has a mask."""
        if all(m is None for m in self.masks):
            return None
        planes = [np.zeros(s, np.uint8) if m is None else m.astype(np.uint8)
                  for m, s in zip(self.masks, self.info.shapes)]
        return pad_planes(planes)


def padded_shape(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``(max H_i, max W_i)`` of ``shapes``."""
    if not shapes:
        raise ValueError("an image set needs at least one image")
    return max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)


def pad_planes(planes: Sequence[np.ndarray], fill=0) -> np.ndarray:
    """Stack planes of different sizes, each in the top-left corner of ``(Hmax, Wmax)``.

    planes: ``(H_i, W_i, *rest)`` arrays sharing ``rest`` (e.g. ``()`` or ``(3,)``).
    Returns ``(N, Hmax, Wmax, *rest)`` of the planes' common dtype, ``fill`` outside each plane.
    """
    planes = [np.asarray(p) for p in planes]
    height, width = padded_shape([p.shape[:2] for p in planes])
    rest = planes[0].shape[2:]
    if any(p.shape[2:] != rest for p in planes):
        raise ValueError("the planes of an image set must all be grey or all be colour")
    out = np.full((len(planes), height, width, *rest), fill, dtype=np.result_type(*planes))
    for i, plane in enumerate(planes):
        out[i, : plane.shape[0], : plane.shape[1]] = plane
    return out


def crop_planes(stack, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Inverse of :func:`pad_planes`: ``stack[i, :H_i, :W_i]`` for each ``(H_i, W_i)`` in ``shapes``.

    stack: ``(N, Hmax, Wmax, *rest)`` array (any array-like indexable per plane). Returns numpy views
    where ``stack`` is a numpy array.
    """
    if len(stack) != len(shapes):
        raise ValueError(f"the stack has {len(stack)} planes but the set has {len(shapes)} images")
    height, width = padded_shape(shapes)
    if tuple(np.shape(stack)[1:3]) != (height, width):
        raise ValueError(f"the stack's planes are {tuple(np.shape(stack)[1:3])}, "
                         f"the set's padded size is {(height, width)}")
    return [np.asarray(stack[i])[:h, :w] for i, (h, w) in enumerate(shapes)]


def read_image_set(folder: str | os.PathLike, with_masks: bool = True) -> ImageSet:
    """Read every PNG / JPEG / TIFF image directly in ``folder`` (natural order) as one set.

    BUSI-style mask files (``*_mask*``) are not images; with ``with_masks`` each image's masks
    (``NAME_mask.png``, ``NAME_mask_1.png`` ...) are read as its reference mask. Files that cannot be
    read, multi-frame TIFFs (a cine loop is opened on its own) and images too small to segment (an icon
    in an export folder) are skipped with one sentence each in ``skipped``. Raises ReadError when no image is left.
    """
    folder = Path(folder)
    paths = list_images(folder)
    planes, names, skipped, masks = [], [], [], []
    for path in paths:
        try:
            volume = read_volume(path)
        except ReadError as exc:
            skipped.append(str(exc))
            continue
        if volume.n_slices > 1:
            skipped.append(f"Skipped '{path}': it holds {volume.n_slices} frames; open a cine loop on its own.")
            continue
        if min(volume.data.shape[1:3]) < MIN_SIDE:  # an icon or thumbnail: it would stop Segment for the whole set
            rows, columns = volume.data.shape[1:3]
            skipped.append(f"Skipped '{path}': it is {rows} x {columns} pixels; an image needs at least {MIN_SIDE} "
                           "on each side.")
            continue
        planes.append(volume.data[0])
        names.append(path.name)
        masks.append(_reference_mask(path, volume.data.shape[1:3], skipped) if with_masks else None)
    if not paths:
        raise read_error(folder, "it holds no PNG, JPEG or TIFF images")
    if not planes:
        raise ReadError(skipped[0] if len(skipped) == 1 else
                        f"None of the {len(paths)} images in '{folder}' could be used; the first: {skipped[0]}")
    planes, mode, colour = _one_channel_mode(planes, names)
    info = ImageSetInfo(os.fspath(folder), names, [p.shape[:2] for p in planes], mode, colour)
    return ImageSet(info, planes, masks, skipped)


def _reference_mask(path: Path, shape: tuple[int, int], skipped: list[str]) -> np.ndarray | None:
    if not busi_mask_paths(path):
        return None
    try:
        mask = read_busi_mask(path)
    except ReadError as exc:
        skipped.append(f"{exc} The image is used without its mask.")
        return None
    return mask if mask.shape == tuple(shape) else None


def _one_channel_mode(planes: list[np.ndarray], names: list[str]) -> tuple[list[np.ndarray], str, list[str]]:
    """Planes with one dtype and one channel layout; the mode ("grey" | "rgb") and the colour files."""
    dtype = np.result_type(*planes)
    colour = [name for plane, name in zip(planes, names) if plane.ndim == 3]
    if not colour:
        return [p.astype(dtype, copy=False) for p in planes], "grey", []
    out = [(np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p).astype(dtype, copy=False) for p in planes]
    return out, "rgb", colour


def output_stems(names: Sequence[str]) -> list[str]:
    """The stem each image's output files are named after: ``NAME`` for ``NAME.EXT``; images sharing a
    stem (``a.png``, ``a.jpg``) get ``NAME_EXT`` so that no two outputs collide."""
    stems = [Path(n).stem for n in names]
    return [f"{stem}_{Path(name).suffix.lstrip('.').lower()}" if stems.count(stem) > 1 else stem
            for name, stem in zip(names, stems)]


def mask_file_names(names: Sequence[str]) -> list[str]:
    """``NAME_mask.png`` for each image file name ``NAME.EXT`` (``NAME_EXT_mask.png`` where two images
    share a stem, see :func:`output_stems`)."""
    return [mask_file_name(stem, MASK_EXTENSION) for stem in output_stems(names)]


def mask_targets(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Where :func:`write_image_set_masks` writes the masks of images ``names`` in ``folder``."""
    return [Path(folder) / m for m in mask_file_names(names)]


def existing_mask_targets(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """The mask files an export into ``folder`` would replace."""
    return [p for p in mask_targets(folder, names) if p.exists()]


def write_image_set_masks(folder: str | os.PathLike, masks: Sequence[np.ndarray], names: Sequence[str], *,
                          overwrite: bool = False) -> list[Path]:
    """Write one PNG mask per image, ``FOLDER/NAME_mask.png`` at the image's own size.

    masks: ``(H_i, W_i)`` label maps (0 = background), one per name. When the whole set holds one
    label value (one class), masks are written 0/255 like BUSI's; with several classes the label
    values themselves are written (uint8, or uint16 beyond 255). Nothing is written when a target
    exists and ``overwrite`` is off (WriteError naming it); each file is written atomically.
    """
    if len(masks) != len(names):
        raise WriteError(f"Cannot write the masks: {len(masks)} masks for {len(names)} images.")
    targets = mask_targets(folder, names)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise WriteError(f"Cannot write '{existing[0]}': the file exists (choose another folder, or replace it).")
    masks = [np.asarray(m) for m in masks]
    values = set()
    for m in masks:
        values.update(int(v) for v in np.unique(m) if v != 0)
    binary = len(values) <= 1
    written: list[Path] = []
    for target, mask in zip(targets, masks):
        plane = np.where(mask != 0, BINARY_VALUE, 0).astype(np.uint8) if binary else mask
        written += write_mask(target, plane, overwrite=overwrite)
    return written


def heatmap_targets(folder: str | os.PathLike, names: Sequence[str], classes: dict[int, str]) -> list[Path]:
    """``FOLDER/NAME_heatmap_class1[_name].tif`` for every image and class, classes outer (the order of
    :func:`write_image_set_heatmaps`); names: :func:`napari_fewshot.io.naming.heatmap_name`."""
    stems = output_stems(names)
    return [Path(folder) / heatmap_name(heatmap_prefix(stem), c, name, HEATMAP_EXTENSION)
            for c, name in sorted(classes.items()) for stem in stems]


def write_image_set_heatmaps(folder: str | os.PathLike, heatmaps: dict[int, Sequence[np.ndarray]],
                             names: Sequence[str], class_names: dict[int, str], *,
                             overwrite: bool = False) -> list[Path]:
    """Write each class's similarity map of each image as a float32 TIFF at the image's own size.

    heatmaps: class id -> ``(H_i, W_i)`` planes, one per name. File names: :func:`heatmap_targets`.
    """
    classes = {c: class_names.get(c, "") for c in heatmaps}
    targets = heatmap_targets(folder, names, classes)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise WriteError(f"Cannot write '{existing[0]}': the file exists (choose another folder, or replace it).")
    planes = [plane for c in sorted(classes) for plane in heatmaps[c]]
    written: list[Path] = []
    for target, plane in zip(targets, planes):
        written += write_image(target, plane, overwrite=overwrite)
    return written
