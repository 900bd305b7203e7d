"""Image sets (folders of 2D ultrasound images of different sizes) on the napari side.

A set is shown as ONE padded Image layer ``(N, Hmax, Wmax[, 3])`` (see :mod:`napari_fewshot.io.image_sets`)
whose ``metadata[IMAGE_SET_KEY]`` is the :class:`~napari_fewshot.io.image_sets.ImageSetInfo` (file
names, each image's own ``(H_i, W_i)``, channel mode). The support, prediction and heatmap layers made
over it carry the same entry. Everything handed to the core is cropped to each image's own size (a
list of planes, so the core treats the images as independent 2D images: no 3D post-processing, no
smoothing across images); everything coming back is placed into the padded layout with padding 0.

No Qt or torch imports: the npe2 reader uses :func:`image_set_layer_data`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from . import CLASS_NAMES_KEY, IMAGE_SET_KEY, ROLE_KEY

LayerData = tuple[Any, dict, str]


def set_info(layer):
    """The layer's ImageSetInfo, or None when it is not (made over) an image set."""
    return None if layer is None else layer.metadata.get(IMAGE_SET_KEY)


def is_2d(layer) -> bool:
    """Whether the core sees ``layer`` as 2D images (an image set, or one 2D image), not the slices of a volume
    (ImageStack.is_3d): what the encoder "auto" and the 2D defaults follow."""
    shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
    return set_info(layer) is not None or len(shape) == 2 or shape[0] == 1


def unit(layer) -> str:
    """What the first axis of ``layer`` counts, for the user: "image" for an image set, else "slice"."""
    return "image" if set_info(layer) is not None else "slice"


def name_units(ui, layer) -> None:
    """Word the panel's scope choices and range for ``layer``: "all images" / "image range" for an image
    set, "all slices" / "slice range" otherwise (the choices keep their order; see Panel.scope)."""
    noun = unit(layer)
    for index, text in enumerate((f"all {noun}s", f"current {noun}", f"{noun} range")):
        if ui.scope_combo.itemText(index) != text:
            ui.scope_combo.setItemText(index, text)
    ui.range_label.setText(f"{noun}s")


def image_set_layer_data(image_set, name: str | None = None) -> list[LayerData]:
    """An :class:`~napari_fewshot.io.image_sets.ImageSet` as napari layer data: the padded Image layer,
    plus (when the folder holds BUSI-style ``NAME_mask*.png`` files) a hidden ``reference masks`` Labels
    layer with the same padding, which the widget never offers as a support; label 1 is then named
    "lesion" on the image too (so the support, prediction and heatmap made over it are)."""
    info = image_set.info
    name = name or Path(info.folder or "image set").name
    data = image_set.padded()
    masks = image_set.padded_masks()
    metadata: dict[str, Any] = {IMAGE_SET_KEY: info}
    if masks is not None:  # BUSI: label 1 is the lesion, for the support, prediction and heatmap made over it
        metadata[CLASS_NAMES_KEY] = {1: "lesion"}
    kwargs: dict[str, Any] = {"name": name, "rgb": info.channel_mode == "rgb", "metadata": metadata}
    if data.dtype == np.uint8:
        kwargs["contrast_limits"] = (0, 255)
    out: list[LayerData] = [(data, kwargs, "image")]
    if masks is not None:
        metadata = {IMAGE_SET_KEY: info, ROLE_KEY: "reference", CLASS_NAMES_KEY: {1: "lesion"}}
        out.append((masks, {"name": f"{name}: reference masks", "metadata": metadata, "visible": False,
                            "features": {"index": [0, 1], "name": ["background", "lesion"]}}, "labels"))
    return out


def open_message(image_set) -> str:
    """What the user is told when a set opens: how many images, the channel mode, what was skipped."""
    info = image_set.info
    text = (f"Opened {_count(len(info), 'image')} as one set ({info.padded_shape[1]} x {info.padded_shape[0]} "
            "padded). " + info.channel_note())
    n_masks = sum(m is not None for m in image_set.masks)
    if n_masks:
        text += f" BUSI-style masks of {_count(n_masks, 'image')} are in the hidden reference layer."
    if image_set.skipped:
        more = f" (and {len(image_set.skipped) - 1} more)" if len(image_set.skipped) > 1 else ""
        text += f" Skipped{more}: {image_set.skipped[0]}"
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def core_image(layer, data) -> list[np.ndarray] | None:
    """The planes of an image-set layer's ``data`` cropped to each image's own size (views, no copy):
    ``(H_i, W_i)`` or ``(H_i, W_i, 3)``. None when ``layer`` is not an image set."""
    from ..io.image_sets import crop_planes

    info = set_info(layer)
    return None if info is None else crop_planes(data, info.shapes)


def core_support(image_layer, support):
    """The support copy for the core: for an image set, its planes cropped to each image's size (paint in
    the padding is dropped); anything else unchanged."""
    from ..io.image_sets import crop_planes

    info = set_info(image_layer)
    if info is None or support is None:
        return support
    return [np.ascontiguousarray(p) for p in crop_planes(support, info.shapes)]


def padded_result(image_layer, result):
    """A SegmentationResult for the layers: for an image set, labels as one ``(N, Hmax, Wmax)`` array and
    each similarity plane padded to ``(Hmax, Wmax)`` (padding 0); anything else unchanged."""
    from ..io.image_sets import pad_planes

    info = set_info(image_layer)
    if info is None or not isinstance(result.labels, list) or len(result.labels) != len(info):
        return result
    height, width = info.padded_shape
    similarity = {c: {i: _pad_one(p, height, width) for i, p in per.items()} for c, per in result.similarity.items()}
    return dataclasses.replace(result, labels=pad_planes(result.labels), similarity=similarity)


def _pad_one(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), plane.dtype)
    out[: plane.shape[0], : plane.shape[1]] = plane
    return out


def text_overlay(viewer):
    """napari's canvas text overlay (`viewer.canvas.overlays.text` since 0.9; `viewer.text_overlay` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and "text" in overlays:
        return overlays["text"]
    return viewer.text_overlay


def show_image_name(viewer, image_layer) -> None:
    """Show which file of an image set the viewer is on ("benign (12).png - 3 of 14, 560 x 471 px") in
    napari's text overlay; hide the overlay when the chosen layer is not an image set."""
    info = set_info(image_layer)
    overlay = text_overlay(viewer)
    if info is None:
        if overlay.text.startswith(_NAME_PREFIX):
            overlay.visible = False
            overlay.text = ""
        return
    index = int(viewer.dims.current_step[0]) if viewer.dims.ndim >= 3 else 0
    index = min(max(index, 0), len(info) - 1)
    height, width = info.shapes[index]
    overlay.text = f"{_NAME_PREFIX}{info.names[index]} - {index + 1} of {len(info)}, {width} x {height} px"
    # Top left: napari's notifications pile up at the bottom right, and the heatmaps' titles and colour bars sit top
    # right; centred, the name reached under the first title on a canvas narrowed by the dock widgets.
    overlay.position = "top_left"
    overlay.visible = True


_NAME_PREFIX = "image: "
