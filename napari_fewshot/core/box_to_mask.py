"""Box to mask: a rectangle drawn around an organ or lesion on one slice -> that object's mask (LiteMedSAM).

    boxes = BoxSegmenter(BoxParams(), service=segmenter.sam)   # the segmenter's LiteMedSAM, loaded on first use
    mask = boxes.mask(plane, box)   # plane: (H, W) or (H, W, 3) float in [0, 1]; box: x0, y0, x1, y1 -> (H, W) bool

The image embedding (the costly part) comes from the LiteMedSAMService (core/sam_service.py), keyed by the
plane's pixels: a second box on the same slice, or a box on a slice refinement already embedded, only runs
the decoder. Planes come from :class:`~napari_fewshot.core.stack.ImageStack` (``stack.slice(i)``: windowed
once per image, as for the features and refinement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FewShotError
from .devices import resolve_device
from .sam_prompt import box_region

MIN_BOX_SIDE = 2.0  # pixels; a click without a drag makes a rectangle smaller than this


@dataclass
class BoxParams:
    """How a box becomes a mask.

    threshold:      probability above which a pixel belongs to the object.
    inside_box:     keep only the pixels inside the box (the user said the object is in there).
    largest_component: keep the largest 4-connected component (a box holds one organ or lesion).
    cached_planes:  image embeddings kept (4 MiB each as float32 before, 2 MiB as the service keeps them) by
                    a BoxSegmenter that makes its own service; a service handed in keeps its own budget.
    """

    threshold: float = 0.5
    inside_box: bool = True
    largest_component: bool = True
    cached_planes: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise FewShotError(f"The box threshold must be between 0 and 1, not {self.threshold}.")
        if self.cached_planes < 1:
            raise FewShotError("At least one plane embedding must be cached.")


class BoxSegmenter:
    """Boxes on planes -> masks, through a :class:`~napari_fewshot.core.sam_service.LiteMedSAMService`.

    service: the LiteMedSAM to use (a FewShotSegmenter's ``sam``, shared with refinement); by default one
             of its own on ``device`` ("auto" | "cpu" | "cuda" | "mps", resolved by
             :func:`~napari_fewshot.core.devices.resolve_device`), keeping ``params.cached_planes`` embeddings.
    """

    def __init__(self, params: BoxParams | None = None, device: str = "auto", service=None):
        from .sam_service import EMBEDDING_BYTES, LiteMedSAMService

        self.params = params or BoxParams()
        if service is None:
            service = LiteMedSAMService(resolve_device(device), self.params.cached_planes * EMBEDDING_BYTES)
        self.service = service
        self.device = service.device

    @property
    def loaded(self) -> bool:
        """True once LiteMedSAM is loaded (the first box also loads it)."""
        return self.service.loaded

    @property
    def embedded(self) -> int:
        """Planes embedded so far by the service (cache misses, refinement's included)."""
        return self.service.computed

    def is_cached(self, plane: np.ndarray) -> bool:
        """True when ``plane``'s embedding is cached (a box on it only runs the decoder)."""
        return self.service.is_cached(plane)

    def masks(self, plane: np.ndarray, boxes: np.ndarray, embedding=None) -> np.ndarray:
        """(N, 4) boxes (x0, y0, x1, y1 in plane pixels, inclusive) on one plane -> (N, H, W) bool masks.

        Each box is first clipped to the plane (see :func:`clip_box`; FewShotError when one misses it).
        embedding: the plane's PlaneEmbedding when the caller has it (default: the service's)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        shape = plane.shape[:2]
        boxes = np.stack([clip_box(box, shape) for box in boxes]) if len(boxes) else boxes
        if not len(boxes):
            return np.zeros((0, *shape), bool)
        embedding = self.service.embedding(plane) if embedding is None else embedding
        probabilities = self.service.decode([(embedding, boxes, None)])[0]
        out = probabilities > self.params.threshold
        for mask, box in zip(out, boxes, strict=True):
            if self.params.inside_box:
                mask &= box_region(box, shape)
            if self.params.largest_component:
                mask[:] = _largest_component(mask)
        return out

    def mask(self, plane: np.ndarray, box) -> np.ndarray:
        """One box (x0, y0, x1, y1) on ``plane`` -> (H, W) bool mask."""
        return self.masks(plane, np.asarray(box, np.float32)[None])[0]

    def slice_mask(self, stack, index: int, box) -> np.ndarray:
        """One box on slice ``index`` of ``stack`` (an ImageStack) -> (H_i, W_i) bool mask; the slice's
        embedding is the one refinement uses (looked up without hashing the plane again)."""
        plane = stack.slice(index)
        return self.masks(plane, np.asarray(box, np.float32)[None], self.service.embedding_of(stack, index))[0]

    def clear(self) -> None:
        """Forget every cached embedding (of the service: refinement's too)."""
        self.service.clear()


def clip_box(box, shape: tuple[int, int]) -> np.ndarray:
    """(4,) x0, y0, x1, y1 (any order of corners) -> the same box sorted and clipped to a (H, W) plane.

    Raises FewShotError when the box lies outside the plane or is thinner than MIN_BOX_SIDE pixels there."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    height, width = shape
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        raise FewShotError("The box lies outside the image; draw it over the organ or lesion.")
    clipped = np.array([max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)], np.float32)
    if clipped[2] - clipped[0] < MIN_BOX_SIDE or clipped[3] - clipped[1] < MIN_BOX_SIDE:
        raise FewShotError("The box is too small; drag a rectangle around the whole organ or lesion.")
    return clipped


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))
