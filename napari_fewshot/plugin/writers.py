"""Writing masks and heatmaps from napari: the npe2 Labels writer and the widget's export helpers.

Format from the extension (:mod:`napari_fewshot.io.formats`: ``.nii.gz``/``.nii``, ``.tif``/``.tiff``, ``.png``
(one file per slice, in a folder), ``.npy``); heatmap file names from :mod:`napari_fewshot.io.naming`.
When the layer carries the :class:`~napari_fewshot.io.Volume` it was read from, NIfTI
output lands on that file's own voxel grid with its affine. Nothing is ever overwritten silently:
the npe2 writer refuses existing files, the widget asks first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.naming import heatmap_name, split_extension
from . import VOLUME_KEY


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers (File > Save Selected Layers), with the layer's class names
    and colours (inside a DICOM SEG, else in the sidecar ``STEM.labels.json``).

    Raises WriteError (shown by napari as a notification) when a target file exists.
    """
    from types import SimpleNamespace

    from .layers import class_names

    metadata = meta.get("metadata") or {}
    data = np.asarray(data)
    names = class_names(SimpleNamespace(features=meta.get("features"), metadata=metadata))
    classes = layer_classes(data, names, meta.get("colormap"))
    return [os.fspath(p) for p in export_mask(path, data, metadata.get(VOLUME_KEY), overwrite=False, classes=classes)]


def layer_classes(data: np.ndarray, names: dict[int, str], colormap=None):
    """The :class:`~napari_fewshot.io.class_table.ClassTable` of a Labels layer: `names`, and the colour
    `colormap` (the layer's) gives each value in `data` or in `names`; None when there is neither a name
    nor a colormap."""
    from ..io.class_table import ClassTable

    if not names and colormap is None:
        return None
    values = sorted((set(int(v) for v in np.unique(data)) | set(names)) - {0})
    colours = {}
    if colormap is not None and hasattr(colormap, "map") and values:
        rgba = np.asarray(colormap.map(np.asarray(values)), dtype=float)
        colours = {v: tuple(float(c) for c in colour) for v, colour in zip(values, rgba)}
    return ClassTable(names, colours) or None


def matching_volume(volume, shape: tuple[int, ...]):
    """``volume`` when its (S, H, W) grid matches a layer of ``shape`` ((S, H, W) or (H, W)), else None."""
    if volume is None or not hasattr(volume, "data"):
        return None
    grid = tuple(volume.data.shape[:3])
    return volume if grid == tuple(shape) or grid == (1, *shape) else None


def export_mask(path: str | os.PathLike, mask: np.ndarray, volume=None, *, overwrite: bool = False,
                classes=None) -> list[Path]:
    """Write a label mask (S, H, W) or (H, W); ``volume`` (if it matches) gives spacing and affine (and the DICOM
    images a SEG refers to); ``classes`` (a ClassTable) the names and colours kept with it."""
    from ..io import write_mask

    return write_mask(path, mask, like=matching_volume(volume, np.shape(mask)), overwrite=overwrite, classes=classes)


def heatmap_paths(path: str | os.PathLike, class_ids: list[int], names: dict[int, str]) -> dict[int, Path]:
    """One file per class beside ``path`` (``STEM.EXT``), named by :func:`napari_fewshot.io.naming.heatmap_name`
    with the prefix ``STEM``: ``STEM_class1_liver.EXT`` (``STEM_class1.EXT`` without a name)."""
    path = Path(path)
    stem, extension = split_extension(path.name)
    if not extension:  # an unknown extension stays at the end; writing then says which ones work
        stem, extension = path.stem, path.suffix
    return {c: path.with_name(heatmap_name(stem, c, names.get(c), extension)) for c in class_ids}


def export_heatmaps(path: str | os.PathLike, heatmaps: dict[int, np.ndarray], names: dict[int, str],
                    volume=None, *, overwrite: bool = False) -> list[Path]:
    """Write each class's similarity map (float32) to its own file (see :func:`heatmap_paths`)."""
    from ..errors import WriteError
    from ..io import write_image

    targets = heatmap_paths(path, sorted(heatmaps), names)
    existing = [t for t in targets.values() if t.exists()]
    if existing and not overwrite:
        raise WriteError(f"Cannot write '{existing[0]}': the file exists.")
    written: list[Path] = []
    for c, target in targets.items():
        data = heatmaps[c]
        written += write_image(target, data, like=matching_volume(volume, data.shape), overwrite=overwrite)
    return written


def existing_targets(path: str | os.PathLike, shape: tuple[int, ...], heatmap_classes: dict[int, str] | None = None,
                     ) -> list[Path]:
    """Files an export to ``path`` would replace (a PNG stack is the folder ``STEM``; see io.writers.mask_targets)."""
    path = Path(path)
    if heatmap_classes is not None:
        candidates = list(heatmap_paths(path, sorted(heatmap_classes), heatmap_classes).values())
    else:
        from ..io.writers import mask_targets

        from ..io.sidecar import sidecar_path
        from ..io.formats import format_of

        targets = mask_targets(path, shape[0] if len(shape) == 3 else 1)
        candidates = [targets[0].parent] if len(targets) > 1 else targets  # a PNG set is replaced as a whole
        fmt = format_of(path, "mask")
        if fmt is not None and not fmt.keeps_classes:
            candidates.append(sidecar_path(path))
    return [p for p in candidates if p.exists()]
