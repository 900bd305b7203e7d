"""npe2 reader: NIfTI, DICOM (files and folders) and TIFF with voxel spacing as the layer scale, and
folders of 2D images (PNG / JPEG / TIFF ultrasound) as one image set.

napari reads PNG/JPEG/TIFF itself but drops the voxel size; this reader keeps it
(``scale = Volume.spacing``) and keeps the :class:`~napari_fewshot.io.Volume` in
``layer.metadata["napari_fewshot_volume"]`` so masks can be exported onto the source grid
(NIfTI with the source affine). Label maps (files whose name says label/seg/mask and whose values
are whole numbers, stored as integers or as floats like CHAOS's float64 ``label_22.nii.gz``) open
as Labels layers with an integer dtype, not as an opaque grey image over the scan.

A folder holding DICOM files is a DICOM series; any other folder holding PNG / JPEG / TIFF images
opens as one image set (one padded layer, see :mod:`.image_sets`), BUSI-style ``*_mask*`` files as a
hidden reference layer rather than as images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import CLASS_NAMES_KEY, VOLUME_KEY

_LABEL_NAME = re.compile(r"(label|labels|seg|segmentation|mask|organs?)([^a-z]|$)", re.IGNORECASE)

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read` when ``path`` is something this plugin reads, else None (napari tries others).

    Accepts one file with a supported extension, a folder holding DICOM files or 2D images, a folder
    whose subfolders hold 2D images (BUSI's benign/ and malignant/), or a list of DICOM files from one
    folder (read as that folder's series).
    """
    from ..io import is_dicom_file
    from ..io.formats import format_of

    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if len(paths) == 1:
            return get_reader(os.fspath(paths[0]))
        same_folder = len({p.parent for p in paths}) == 1
        return read if paths and same_folder and all(is_dicom_file(p) for p in paths) else None
    p = Path(path)
    if p.is_dir():
        return read if _folder_has_dicom(p) or _folder_has_images(p) or _image_subfolders(p) else None
    fmt = format_of(p, "read")  # the formats whose napari_reader flag is set (napari.yaml lists the same)
    return read if fmt is not None and fmt.napari_reader else None


def read(path: str | list[str]) -> list[LayerData]:
    """Read one image (or a DICOM folder / list of DICOM files of one series) as a napari layer."""
    from ..io import read_volume

    if isinstance(path, (list, tuple)):
        path = os.fspath(Path(path[0]).parent) if len(path) > 1 else path[0]
    if Path(path).is_dir() and not _folder_has_dicom(Path(path)):
        subfolders = [] if _folder_has_images(Path(path)) else _image_subfolders(Path(path))
        if subfolders:
            # One set per subfolder: the subsets (benign / malignant, one per patient...) stay apart, and
            # a prototype bank saved on one segments the others.
            return [layer for sub in subfolders for layer in read_image_folder(os.fspath(sub))]
        return read_image_folder(path)
    volume = read_volume(path)
    if volume.is_rgb:  # files with three equal channels were read as grey; say when colour is kept
        from napari.utils.notifications import show_info

        show_info(f"'{Path(path).name}' has colour (unequal RGB channels, e.g. Doppler): it is kept as RGB.")
    classes = volume.meta.get("classes") or _sidecar_classes(path)
    if classes is None:
        return [volume_layer_data(volume, name=_layer_name(path))]
    return [volume_layer_data(volume, name=_layer_name(path), class_names=classes.names, as_labels=True,
                              colours=classes.colours)]


def _sidecar_classes(path: str):
    """The class names and colours written beside the mask file `path` (``STEM.labels.json``), or None."""
    from ..errors import ReadError
    from ..io.sidecar import read_sidecar

    if Path(path).is_dir():
        return None
    try:
        return read_sidecar(path)
    except ReadError as err:  # a damaged table: the mask still opens, without its names
        from napari.utils.notifications import show_warning

        show_warning(str(err))
        return None


def read_image_folder(path: str) -> list[LayerData]:
    """A folder of 2D images as one padded image set (plus its reference masks, if any); tells the user
    how many images opened, the channel mode (grey / RGB) and what was skipped."""
    from napari.utils.notifications import show_info

    from ..io.image_sets import read_image_set
    from .image_sets import image_set_layer_data, open_message

    image_set = read_image_set(path)
    show_info(open_message(image_set))
    return image_set_layer_data(image_set)


def volume_layer_data(volume, name: str, class_names: dict[int, str] | None = None,
                      as_labels: bool | None = None, colours: dict | None = None) -> LayerData:
    """A :class:`~napari_fewshot.io.Volume` as napari layer data ``(data, kwargs, layer_type)``.

    A single 2D image (S == 1) becomes a 2D layer; ``scale`` is the voxel spacing in mm.
    ``as_labels=None`` guesses from the name and values (whole numbers named like a label map; float
    label maps are cast to the smallest fitting integer dtype). ``colours``: label value -> RGBA in [0, 1]
    for a Labels layer (a mask's kept colours; the other values get the plugin's palette).
    """
    data = volume.data
    spacing = tuple(volume.spacing)
    if volume.n_slices == 1:
        data, spacing = data[0], spacing[1:]
    if as_labels is None:
        as_labels = not volume.is_rgb and bool(_LABEL_NAME.search(name)) and _whole_numbers(data)
    if as_labels and data.dtype.kind == "f":
        from ..io._arrays import as_label_array

        data = as_label_array(data, volume.source or name)
    metadata: dict[str, Any] = {VOLUME_KEY: volume}
    if class_names:
        metadata[CLASS_NAMES_KEY] = dict(class_names)
    kwargs: dict[str, Any] = {"name": name, "scale": spacing, "metadata": metadata}
    if as_labels:
        if class_names:
            kwargs["features"] = {"index": [0, *class_names], "name": ["background", *class_names.values()]}
        if colours:
            kwargs["colormap"] = _label_colours(colours, int(np.max(data, initial=0)))
        return data, kwargs, "labels"
    kwargs["rgb"] = volume.is_rgb
    if volume.format in ("nifti", "dicom") and not volume.is_rgb and _looks_like_ct(data):
        kwargs["contrast_limits"] = (-160.0, 240.0)  # soft-tissue window (W 400, L 40 HU)
    return data, kwargs, "image"


def _label_colours(colours: dict, highest: int) -> dict:
    """A Labels colormap (``{value: RGBA}``) giving the kept `colours`, the plugin's palette to every other
    value up to `highest` (at most 1024), and grey to any value above (e.g. painted later)."""
    from .layers import PALETTE

    top = min(max(highest, *colours), 1024)
    table = {v: tuple(PALETTE[1 + (v - 1) % (len(PALETTE) - 1)]) for v in range(1, top + 1)}
    table.update({int(v): tuple(c) for v, c in colours.items()})
    return {None: (0.7, 0.7, 0.7, 1.0), 0: (0.0, 0.0, 0.0, 0.0), **table}


def _whole_numbers(data: np.ndarray) -> bool:
    """True for integer data, and for float data holding only finite whole numbers (a label map saved as float)."""
    if np.issubdtype(data.dtype, np.integer):
        return True
    if data.dtype.kind != "f" or data.size == 0:
        return False
    return bool(np.isfinite(data).all() and np.array_equal(data, np.round(data)))


def _looks_like_ct(data: np.ndarray) -> bool:
    """Hounsfield units: air near -1000 and a signed dtype."""
    sample = data.reshape(-1)[:: max(1, data.size // 100_000)]
    return data.dtype.kind in "if" and float(sample.min()) <= -900


def _layer_name(path: str) -> str:
    from ..io.naming import split_extension

    return split_extension(Path(path).name)[0]


def _folder_has_images(folder: Path) -> bool:
    """True when ``folder`` directly holds a PNG / JPEG / TIFF file that is not a BUSI-style mask."""
    from ..errors import ReadError
    from ..io import list_images

    try:
        return bool(list_images(folder))
    except (OSError, ReadError):
        return False


def _image_subfolders(folder: Path) -> list[Path]:
    """Subfolders directly inside ``folder`` that hold 2D images (natural order)."""
    from ..io.folders import natural_key

    try:
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted((p for p in subs if _folder_has_images(p)), key=lambda p: natural_key(p.name))


def _folder_has_dicom(folder: Path, look_at: int = 20) -> bool:
    """True when one of the first files directly inside ``folder`` is DICOM."""
    from ..io import is_dicom_file

    try:
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return False
    return any(is_dicom_file(p) for p in files[:look_at])
