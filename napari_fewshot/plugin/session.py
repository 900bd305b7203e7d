"""One :class:`~napari_fewshot.core.FewShotSegmenter` per image layer, so cached features survive
switching layers and re-segmenting.

A session is stale when its layer's data was replaced or edited, or when the widget's encoder /
device changed: the next job then builds the segmenter and calls ``set_image`` again (in the worker
thread, since building the encoder loads weights). The session also remembers the layers it
produced (prediction, heatmaps) so a re-segmentation updates them instead of adding new ones.

Only the Qt thread reads the layer: :func:`image_planes` takes what the core segments from it when a
job is built, and the worker's :meth:`ImageSession.prepare` gets that snapshot, never the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FewShotError
from .image_sets import core_image

@dataclass
class ImageSession:
    """The segmenter of one image layer and the layers derived from it."""

    layer: Any  # napari.layers.Image: read on the Qt thread only (events, job snapshots, result layers)
    segmenter: Any = None  # FewShotSegmenter, built lazily
    image_ref: Any = None  # the layer.data object the segmenter was given
    stale: bool = True
    prediction: Any = None  # napari.layers.Labels
    heatmaps: dict = field(default_factory=dict)  # class id -> napari.layers.Image
    last_result: Any = None  # the last whole-volume SegmentationResult (Check next follows its uncertainty)
    checked: set = field(default_factory=set)  # slices Check next has shown since that result

    def __post_init__(self) -> None:
        self.layer.events.data.connect(self.mark_stale)

    def mark_stale(self, *_) -> None:
        self.stale = True

    def disconnect(self) -> None:
        self.layer.events.data.disconnect(self.mark_stale)

    def release(self) -> None:
        """The widget is gone: stop listening and let go of the segmenter (features, LiteMedSAM) and the last result.
        A finished worker's signals may keep this session itself alive (napari keeps the workers of its windows)."""
        self.disconnect()
        self.segmenter = self.image_ref = self.last_result = None
        self.stale = True

    def reuses_features(self, params) -> bool:
        """True when the segmenter's features stay valid under ``params``: only settings that change how features
        are used differ (core/config.py feature_settings)."""
        from ..core.config import feature_settings

        if self.segmenter is None:
            return False
        return feature_settings(self.segmenter.params) == feature_settings(params)

    def ensure_segmenter(self, params) -> Any:
        """The segmenter for ``params`` (a SegmentationParams): the current one (features kept) when only
        the support mode changed, a new one when the encoder, device or anything feature-related did."""
        from ..core import FewShotSegmenter

        if self.reuses_features(params):
            self.segmenter.params = params
        else:
            self.segmenter = FewShotSegmenter(params)
            self.stale = True
        return self.segmenter

    def sam_service(self, params, busy: bool = False) -> Any:
        """The LiteMedSAM service (core/sam_service.py) of this image's segmenter, for the box tool: the segmenter
        of ``params`` (made now when there is none; not replaced while a job (``busy``) may be using it)."""
        if self.segmenter is None or not busy:
            self.ensure_segmenter(params)
        return self.segmenter.sam

    def prepare(self, image: ImagePlanes, params) -> Any:
        """The segmenter for ``params`` holding ``image`` (worker thread: building it loads weights, and
        jobs run one at a time, so nothing else touches the segmenter meanwhile). Reads no layer."""
        self.ensure_segmenter(params)
        if self.stale or self.image_ref is not image.source:
            self.segmenter.set_image(image.planes, rgb=image.rgb)
            self.image_ref, self.stale = image.source, False
        return self.segmenter

    def cached_slices(self) -> int:
        seg = self.segmenter
        return 0 if seg is None or seg.cache is None or self.stale else len(seg.cache)


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (arrays inside)
class ImagePlanes:
    """An image layer's pixels as the core segments them, taken on the Qt thread for a job.

    planes: a volume ``(S, H, W[, 3])`` as the layer holds it (a numpy array, or a lazy array-like that
            the core reads in the worker); or a tuple of 2D planes: an image set's ``(H_i, W_i[, 3])``
            views cropped to each image's own size, or a 2D image's one plane. Views, never copies: napari
            replaces an image layer's data when another image is opened (the ``data`` event marks the
            session stale), it does not write into it.
    rgb: the layer's colour flag (a last axis of 3 is channels).
    source: the ``layer.data`` object the planes come from; a session sets its image anew when it changes.
    """

    planes: Any
    rgb: bool
    source: Any


def image_planes(layer) -> ImagePlanes:
    """What a job segments of image ``layer`` (Qt thread; cheap: views, and a lazy volume is not read).

    A volume as is, an image set as its cropped planes, a 2D image as a one-plane image set (its labels
    come back as a one-element list, see :func:`support_stack`). Raises FewShotError for an image the
    core cannot segment (multiscale, neither 2D nor 3D).
    """
    data, rgb = layer.data, bool(layer.rgb)
    if getattr(layer, "multiscale", False) or isinstance(data, list) or getattr(data, "ndim", None) is None:
        raise FewShotError("Multiscale (pyramid) images are not supported; open the full-resolution image.")
    planes = core_image(layer, data)  # an image set: each image at its own size, no padding
    if planes is None:
        spatial = data.ndim - (1 if rgb else 0)
        if spatial not in (2, 3):
            raise FewShotError(
                f"The image has {spatial} dimensions; pick a 2D image or a 3D volume (slices along the first axis)."
            )
        planes = [data] if spatial == 2 else data
    return ImagePlanes(tuple(planes) if isinstance(planes, list) else planes, rgb, data)


def support_stack(support: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray | list[np.ndarray]:
    """A copy of the support layer's data, checked against the image's (S, H, W) or (H, W); shaped like
    :func:`image_planes` gives the image ((S, H, W), or a one-plane list for a 2D image)."""
    support = np.array(support, copy=True)  # the worker must never see (or touch) the live layer data
    if tuple(support.shape) != tuple(image_shape):
        raise FewShotError(
            f"The support layer is {support.shape} but the image is {tuple(image_shape)}; "
            "create a new support layer for this image."
        )
    return [support] if support.ndim == 2 else support


def painted_slices(support) -> list[int]:
    """Indices of the slices (of an (S, H, W) array or a list of planes) with any paint."""
    return [i for i in range(len(support)) if np.any(support[i])]


def slice_indices(scope: str, current: int, n_slices: int, start: int = 0, stop: int = 0) -> list[int] | None:
    """Slices a Segment press covers: None for "all", [current] for "current", start..stop (inclusive) for "range"."""
    if scope == "all":
        return None
    if scope == "current":
        return [current]
    if scope != "range":
        raise FewShotError(f"Unknown scope {scope!r}; use all, current or range.")
    low, high = sorted((int(start), int(stop)))
    if low < 0 or high >= n_slices:
        raise FewShotError(f"The slice range {low}-{high} is outside the image's slices 0-{n_slices - 1}.")
    return list(range(low, high + 1))
