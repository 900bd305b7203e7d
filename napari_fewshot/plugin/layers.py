"""Bookkeeping between segmentation results and napari layers.

- the ``support`` Labels layer the user paints (created here, never written to afterwards): filled,
  and belonging to the image it was made for (:func:`owner_of`): the widget offers an image only its
  own supports (and unowned Labels layers of its shape, e.g. opened from a file) and refuses to
  segment an image with another image's paint, even when the shapes match,
- the ``prediction`` Labels layer, in the support's colours but drawn as class-coloured *contours*
  (outlines) at full opacity. Filled paint = what the user painted; an outline = what the model
  predicted: the two are told apart at a glance and a class keeps one colour everywhere. (The same
  fill at half opacity, used before, is still the class's colour over the same organ: painted and
  predicted slices looked alike. Outlines also leave the scan visible for judging the boundary.)
- one ``name (K): cosine similarity`` Image layer per class: best cosine similarity to that class's
  prototypes, mapped black -> the class's label colour and blended additively, with a colour bar.
  Each class gets its own contrast range (:func:`heatmap_limits`): from the similarity most of the
  rest of the image reaches (dark) to what most of the class's own predicted region reaches (full
  colour). Raw cosine similarity is high for all soft tissue, so a shared (0, 1) range made every
  organ glow; relative to the rest of the image, the class stands out.

No model maths here: arrays in, layers out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
from napari.layers import Image, Labels
from napari.utils import Colormap
from napari.utils.colormaps import CyclicLabelColormap

from ..errors import FewShotError
from . import CLASS_NAMES_KEY, IMAGE_SET_KEY, ROLE_KEY, SUPPORT_OF_KEY, VOLUME_KEY

SUPPORT_NAME = "support"
PREDICTION_NAME = "prediction"
HEATMAP_LIMITS = (0.0, 1.0)  # until a heatmap has values (then heatmap_limits)
OUTSIDE_QUANTILE = 0.95  # the heatmap is dark up to this quantile of the similarity outside the class...
INSIDE_QUANTILE = 0.90  # ...and in full colour from this quantile of the similarity inside the class
CONTRAST_SAMPLES = 1_000_000  # voxels looked at to choose a contrast range (a strided subsample)
# Bright, distinct class colours for the support layers the plugin creates (cycled beyond 10 classes).
PALETTE = np.array([
    [0, 0, 0, 0], [0.95, 0.15, 0.15, 1], [0.15, 0.55, 1.0, 1], [0.2, 0.85, 0.25, 1], [1.0, 0.85, 0.0, 1],
    [0.9, 0.25, 0.9, 1], [0.0, 0.85, 0.85, 1], [1.0, 0.5, 0.0, 1], [0.6, 0.4, 1.0, 1], [1.0, 0.6, 0.75, 1],
    [0.7, 1.0, 0.3, 1],
])


def unwrap(obj):
    """The napari object behind the PublicOnlyProxy napari hands plugins (identity, deep copies)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a, b) -> bool:
    """Identity of two layers, seen through proxies."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def spatial_kwargs(image: Image) -> dict:
    """scale / translate / rotate / shear of ``image``'s spatial axes, for layers laid over it."""
    return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate, "shear": image.shear}


def source_metadata(image: Image) -> dict:
    """What layers made over ``image`` inherit from its metadata: the Volume it was read from, or the
    image set's file names and sizes (so exports go back to the source's grid or files)."""
    return {k: image.metadata[k] for k in (VOLUME_KEY, IMAGE_SET_KEY) if k in image.metadata}


def spatial_shape(image: Image) -> tuple[int, ...]:
    """(S, H, W) or (H, W) of an image layer (colour axis of RGB images dropped)."""
    shape = tuple(image.data.shape)
    return shape[:-1] if image.rgb else shape


def class_names(*layers) -> dict[int, str]:
    """Label value -> name, from the first layer that knows: ``features`` (index, name) or metadata."""
    for layer in layers:
        if layer is None:
            continue
        features = getattr(layer, "features", None)
        if features is not None and {"index", "name"} <= set(features.columns):
            names = {int(i): str(n) for i, n in zip(features["index"], features["name"], strict=True) if int(i) != 0}
            if names:
                return names
        names = layer.metadata.get(CLASS_NAMES_KEY)
        if names:
            return {int(k): str(v) for k, v in names.items()}
    return {}


def label_features(names: dict[int, str]) -> dict | None:
    """Labels ``features`` table giving each label value its name (shown in napari's status bar)."""
    if not names:
        return None
    return {"index": [0, *names], "name": ["background", *names.values()]}


def create_support(viewer, image: Image, name: str = SUPPORT_NAME) -> Labels:
    """Add an empty uint8 Labels layer over ``image`` (same shape and placement), ready to paint; it
    belongs to ``image`` (:func:`owner_of`)."""
    names = class_names(image)
    metadata = {ROLE_KEY: "support", CLASS_NAMES_KEY: names, SUPPORT_OF_KEY: image_key(image), **source_metadata(image)}
    layer = viewer.add_labels(np.zeros(spatial_shape(image), np.uint8), name=name, metadata=metadata,
                              features=label_features(names), **spatial_kwargs(image))
    layer.colormap = CyclicLabelColormap(colors=PALETTE)
    layer.mode = "paint"
    layer.brush_size = 10
    return layer


def update_prediction(viewer, image: Image, support: Labels, layer: Labels | None, labels: np.ndarray,
                      slices: Iterable[int] | None) -> Labels:
    """Write ``labels`` into the prediction layer (created when missing or of the wrong shape/dtype).

    labels: (S, H, W) (or (H, W) for a 2D image). slices: which slices of ``labels`` are new
    (None: all; a new layer takes ``labels`` itself, no copy, when its dtype fits; an existing one has them
    written into its own array). The prediction takes the support's colormap, so a class has one colour
    everywhere, drawn as contours (:func:`contour_width`) so it is not mistaken for paint. One refresh of the
    shown slice: replacing the data and setting the colormap redrew it twice more, ~40 ms of the Qt thread on a
    512 x 512 x 100 scan when a correction's coarse result arrived (BENCHMARKS.md, session 17 "draw").
    """
    shape = spatial_shape(image)
    fresh = layer is None or layer not in viewer.layers or layer.data.shape != shape or not _fits(labels, layer.data)
    dtype = np.promote_types(labels.dtype, support.data.dtype) if fresh else layer.data.dtype
    whole = slices is None and labels.shape == shape
    placed = fresh and whole  # the new layer holds `labels` already
    if fresh:
        names = class_names(support, image)
        metadata = {ROLE_KEY: PREDICTION_NAME, CLASS_NAMES_KEY: names, **source_metadata(image)}
        data = labels.astype(dtype, copy=False) if whole else np.zeros(shape, dtype)
        layer = viewer.add_labels(data, name=PREDICTION_NAME, metadata=metadata, opacity=1.0,
                                  features=label_features(names), **spatial_kwargs(image))
        layer.contour = contour_width(shape)
    elif whole and not _writable(layer.data):  # (not a writable array: replaced, as before)
        layer.data, placed = labels.astype(dtype, copy=False), True
    if not placed:  # in place, even the whole volume: replacing the data redrew the slice once more
        _write_slices(layer.data, labels, slices)
    if fresh or unwrap(layer.colormap) != unwrap(support.colormap):  # setting it redraws: only when it differs
        copy_colormap(support, layer)
    layer.refresh()  # the one redraw of the slice shown
    return layer


def _writable(data) -> bool:
    return isinstance(data, np.ndarray) and data.flags.writeable


def _write_slices(data: np.ndarray, labels: np.ndarray, slices: Iterable[int] | None) -> None:
    """Copy ``slices`` of ``labels`` into ``data`` (all of it for None or a 2D image)."""
    if slices is None or labels.ndim == 2:
        data[...] = labels
    else:
        for i in slices:
            data[i] = labels[i]


def contour_width(shape: tuple[int, ...]) -> int:
    """Outline thickness in pixels for a prediction of spatial ``shape``: about one screen pixel or two
    whatever the image size (1 up to 256 px across, 2 for 512 px, ...)."""
    return max(1, round(max(shape[-2:]) / 256))


def copy_colormap(source: Labels, target: Labels) -> None:
    """Give ``target`` the colours of ``source`` (a copy, so later edits of either stay separate)."""
    target.colormap = copy.deepcopy(unwrap(source.colormap))


HEATMAP_VALUE = "cosine similarity"  # what a heatmap's values (and its colour bar's numbers) are


def heatmap_name(class_id: int, names: dict[int, str]) -> str:
    """``liver (1): cosine similarity``, or ``class 1: cosine similarity`` when the class has no name: the class
    first, so the layer list's middle-truncation keeps it. The canvas shows it as the title of the layer's colour
    bar (results.show_legend), which has numbers only."""
    name = names.get(class_id)
    return f"{name} ({class_id}): {HEATMAP_VALUE}" if name else f"class {class_id}: {HEATMAP_VALUE}"


def class_colormap(support: Labels, class_id: int, name: str = "") -> Colormap:
    """Black -> the class's label colour, for additive blending (named after the class, for the colour bar)."""
    r, g, b, _ = np.asarray(unwrap(support.colormap).map(np.array([class_id]))[0], dtype=float)
    label = f"class {class_id} ({name})" if name else f"class {class_id}"
    return Colormap([[0, 0, 0, 1], [r, g, b, 1]], name=f"fewshot {label}")


def heatmap_limits(similarity: np.ndarray, prediction: np.ndarray | None, class_id: int) -> tuple[float, float]:
    """Contrast range of a class's heatmap: (the OUTSIDE_QUANTILE of the similarity where the class is
    not predicted, the INSIDE_QUANTILE where it is), so that the rest of the image (other soft tissue,
    which also matches the class's prototypes fairly well) stays dark and the class is bright.

    similarity: the heatmap, (S, H, W) or (H, W); exact zeros are slices not segmented (yet) and are
    ignored. prediction: labels of the same shape; the class is where they equal ``class_id`` (None or
    nowhere: the brightest 0.1 % of the similarity stands for the class). Looks at a strided subsample of at most
    CONTRAST_SAMPLES values (the Qt thread calls it on whole volumes).
    """
    step = max(1, int(np.ceil((similarity.size / CONTRAST_SAMPLES) ** (1 / similarity.ndim))))
    sub = (slice(None, None, step),) * similarity.ndim
    values = np.asarray(similarity[sub], dtype=np.float32)
    segmented = values != 0
    if not segmented.any():
        return HEATMAP_LIMITS
    mask = (np.asarray(prediction[sub]) == class_id) & segmented if prediction is not None else None
    outside = values[segmented & ~mask] if mask is not None else values[segmented]
    low = float(np.quantile(outside if outside.size else values[segmented], OUTSIDE_QUANTILE))
    if mask is not None and mask.any():
        high = float(np.quantile(values[mask], INSIDE_QUANTILE))
    else:
        high = float(np.quantile(values[segmented], 0.999))
    return (low, high) if high > low + 1e-3 else (low, low + 1e-3)


def update_heatmaps(viewer, image: Image, support: Labels, layers: dict[int, Image],
                    similarity: dict[int, dict[int, np.ndarray] | np.ndarray], visible: bool,
                    prediction: np.ndarray | None = None,
                    limits: dict[int, tuple[float, float]] | None = None) -> dict[int, Image]:
    """Write similarity maps into one Image layer per class; returns class id -> layer.

    similarity: class id -> either {slice index -> (H, W) cosine similarity}, whose slices not listed
    keep their previous values (0 at first), or a float32 array of the image's spatial shape, which
    the layer takes as its data as it is (no copy: assembling a big volume is the worker's job).
    prediction: the prediction layer's labels (image's spatial shape), which set each class's
    contrast range (:func:`heatmap_limits`) unless `limits` gives the class's range (the support's own
    similarity levels, SegmentationResult.similarity_range: the same scale on every image). Each layer shows
    its colour bar. Layers whose class vanished from the support are removed.
    """
    shape = spatial_shape(image)
    names = class_names(support, image)
    if prediction is not None and np.shape(prediction) != shape:
        prediction = None
    out: dict[int, Image] = {}
    for c, maps in sorted(similarity.items()):
        volume = maps if isinstance(maps, np.ndarray) and maps.shape == shape else None
        layer = layers.get(c)
        if layer is None or layer not in viewer.layers or layer.data.shape != shape:
            data = volume if volume is not None else np.zeros(shape, np.float32)
            layer = viewer.add_image(data, name=heatmap_name(c, names),
                                     colormap=class_colormap(support, c, names.get(c, "")),
                                     contrast_limits=HEATMAP_LIMITS, blending="additive", visible=visible,
                                     metadata={ROLE_KEY: "heatmap", "class_id": c, **source_metadata(image)},
                                     **spatial_kwargs(image))
            layer.colorbar.visible = True
        elif volume is not None:
            layer.data = volume
        if volume is None:
            _write_planes(layer.data, maps, len(shape) == 2)
        if layer.name != heatmap_name(c, names):  # names may have arrived since (e.g. from a bank)
            layer.name = heatmap_name(c, names)
        layer.contrast_limits = (limits or {}).get(c) or heatmap_limits(layer.data, prediction, c)
        layer.refresh()
        out[c] = layer
    for c, layer in layers.items():
        if c not in out and layer in viewer.layers:
            viewer.layers.remove(layer)
    return out


def _write_planes(data: np.ndarray, per_slice: dict[int, np.ndarray], flat: bool) -> None:
    """Copy {slice index -> plane} into ``data`` (the whole of it when ``flat``: a 2D image)."""
    for i, plane in per_slice.items():
        if flat:
            data[...] = plane
        else:
            data[i] = plane


def image_choices(viewer) -> list[str]:
    """Names of the image layers the widget offers (heatmaps are not images to segment)."""
    return [ly.name for ly in viewer.layers if isinstance(ly, Image) and ly.metadata.get(ROLE_KEY) != "heatmap"]


# -- which image a support belongs to ----------------------------------------------------------
def image_key(image: Image) -> str:
    """What a support records of the image it was made for: the layer's unique id (kept across renames)."""
    return str(unwrap(image).unique_id)


def claim_support(support: Labels, image: Image) -> None:
    """Record that ``support``'s paint is for ``image`` (a Box -> paint, or a job with it, on that image)."""
    unwrap(support).metadata[SUPPORT_OF_KEY] = image_key(image)


def owner_of(viewer, support: Labels) -> Image | None:
    """The open image layer ``support`` was made for; None for a Labels layer of no open image (opened from
    a file, or its image was closed): such a layer is the user's to pick for any image of its shape."""
    key = unwrap(support).metadata.get(SUPPORT_OF_KEY)
    return next((ly for ly in viewer.layers if isinstance(ly, Image) and image_key(ly) == key), None) if key else None


def support_choices(viewer, image: Image | None, keep: str | None = None,
                    preferred: str | None = None) -> tuple[list[str], str | None]:
    """(names the Support picker offers for ``image``, the one to choose).

    Offered: the Labels layers made for ``image`` and the unowned ones of its spatial shape; never another
    image's support, a prediction or a reference; nothing without an image. Chosen: ``keep`` when offered,
    else ``preferred`` when made for the image, else the image's newest own support, else None: an unowned
    layer is chosen only by the user."""
    if image is None:
        return [], None
    offered, own, shape = [], [], spatial_shape(image)
    for layer in viewer.layers:
        if not isinstance(layer, Labels) or layer.metadata.get(ROLE_KEY) in ("prediction", "reference"):
            continue
        owner = owner_of(viewer, layer)
        if same_layer(owner, image):
            offered.append(layer.name)
            own.append(layer.name)
        elif owner is None and tuple(layer.data.shape) == shape:
            offered.append(layer.name)
    chosen = keep if keep in offered else preferred if preferred in own else own[-1] if own else None
    return offered, chosen


def check_support(viewer, support: Labels, image: Image) -> None:
    """FewShotError (one sentence) when ``support`` belongs to another open image than ``image``."""
    owner = owner_of(viewer, support)
    if owner is not None and not same_layer(owner, image):
        raise FewShotError(f"The support layer '{support.name}' holds the paint of '{owner.name}', not of "
                           f"'{image.name}'; pick this image's own support or press New to make one.")


def place_below(viewer, layer, anchor) -> None:
    """Move ``layer`` just below ``anchor`` in the layer list (the support stays on top for painting)."""
    ll, layer, anchor = viewer.layers, unwrap(layer), unwrap(anchor)
    if layer in ll and anchor in ll and ll.index(layer) > ll.index(anchor):
        ll.move(ll.index(layer), ll.index(anchor))


def heatmap_arrays(layers: dict[int, Image]) -> dict[int, np.ndarray]:
    """Class id -> the heatmap layer's data (for export)."""
    return {c: np.asarray(layer.data) for c, layer in layers.items()}


def _fits(labels: np.ndarray, data: np.ndarray) -> bool:
    """True when every value of ``labels`` can be stored in ``data``'s dtype."""
    return labels.size == 0 or np.can_cast(labels.dtype, data.dtype) or int(labels.max()) <= np.iinfo(data.dtype).max
