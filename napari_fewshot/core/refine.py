"""Refine: prototypes find, LiteMedSAM delineates.

After prototype matching, every predicted connected component of a class on a slice (or image) becomes a
box prompt (its bounding box grown by RefineParams.margin; optionally the component itself as a dense mask
prompt) for LiteMedSAM's mask decoder (core/sam_prompt.py). The decoded mask replaces the component,
unless it is implausible (empty, or more than RefineParams.max_growth times larger or smaller than the
component): then the component stays as it was. Where classes overlap, the highest probability wins.
The 3D clean-up of volumes (and the largest-component rule of 2D images) runs afterwards, in
FewShotSegmenter.segment.

LiteMedSAM's image embedding of a slice is computed once and kept (EmbeddingCache): in memory within a
byte budget, and under the feature cache folder when there is one, keyed by the stack's signature, so
re-segmenting after a stroke decodes boxes only and a new image never reuses another's embeddings. The
refiner always uses the original LiteMedSAM weights, whatever encoder (fine-tuned or not) found the objects.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Generator, Sequence

import numpy as np
import torch
from scipy import ndimage

from .config import RefineParams, SegmentationParams
from .matching import matmul_dtype
from .progress import Progress
from .sam_prompt import BoxPrompter, PlaneEmbedding, box_of, box_region
from .stack import ImageStack

EMBEDDING_BYTES = 256 * 64 * 64 * 2  # one slice's (256, 64, 64) float16 embedding
FALLBACK = 0.5 + 1e-3  # probability given to a kept coarse component: above background, below a confident decode


class EmbeddingCache:
    """LiteMedSAM embeddings of one ImageStack's slices, computed at most once per slice.

    budget_bytes: memory for float16 embeddings (least recently used dropped first).
    disk_dir:     folder for a persistent copy (None: memory only); slices go under a signature of
                  (pixels and window, LiteMedSAM weights, package version).
    """

    def __init__(self, budget_bytes: int, disk_dir: str | Path | None = None):
        self.capacity = max(1, budget_bytes // EMBEDDING_BYTES)
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self._signature: str | None = None
        self._planes: OrderedDict[int, PlaneEmbedding] = OrderedDict()
        self.computed = 0  # embeddings computed by the encoder (not read back), for tests and benchmarks

    def __len__(self) -> int:
        return len(self._planes)

    def get(self, stack: ImageStack, index: int, prompter: BoxPrompter) -> PlaneEmbedding:
        """The embedding of slice `index` of `stack` (a new stack forgets the previous one's)."""
        signature = self._key(stack, prompter)
        if signature != self._signature:
            self._planes.clear()
            self._signature = signature
        embedding = self._planes.get(index)
        if embedding is None:
            embedding = self._read(stack, index, prompter) or self._compute(stack, index, prompter)
            self._planes[index] = embedding
            while len(self._planes) > self.capacity:
                self._planes.popitem(last=False)
        else:
            self._planes.move_to_end(index)
        return embedding

    def _key(self, stack: ImageStack, prompter: BoxPrompter) -> str:
        from .. import __version__

        text = json.dumps([stack.signature(), prompter.weights_id, __version__])
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def _compute(self, stack: ImageStack, index: int, prompter: BoxPrompter) -> PlaneEmbedding:
        # bfloat16 where the hardware does it natively: about twice as fast on such a CPU, and the decoded
        # masks agree with float32's to within a few boundary pixels.
        dtype = matmul_dtype(prompter.device.type)
        with torch.autocast(prompter.device.type, dtype=dtype, enabled=dtype == torch.bfloat16):
            embedding = prompter.embed(stack.slice(index))
        embedding.features = embedding.features.half()
        self.computed += 1
        if self.disk_dir is not None:
            self._write(index, embedding)
        return embedding

    def _path(self, index: int) -> Path:
        return self.disk_dir / "sam" / self._signature / f"{index}.npy"

    def _read(self, stack: ImageStack, index: int, prompter: BoxPrompter) -> PlaneEmbedding | None:
        if self.disk_dir is None or not self._path(index).is_file():
            return None
        try:
            array = np.load(self._path(index))
        except (OSError, ValueError):
            return None  # a damaged file is computed again (and rewritten)
        if array.shape != (1, 256, 64, 64):
            return None
        shape = stack.shape_of(index)
        features = torch.from_numpy(array).to(prompter.device)
        return PlaneEmbedding(features, shape, 256 / max(shape))

    def _write(self, index: int, embedding: PlaneEmbedding) -> None:
        from ..io.atomic import atomic_write

        path = self._path(index)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = embedding.features.cpu().numpy()
            atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False), suffix=".npy")
        except OSError:
            pass  # the cache folder is a speed-up only: a full or read-only disk costs time, not results


def components(labels: np.ndarray, class_ids: Sequence[int], min_pixels: int,
               max_per_class: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(H, W) label plane -> [(class position k in 1..K, (H, W) bool component)] for the 8-connected
    components of at least `min_pixels` pixels, each class's largest first, at most `max_per_class` each."""
    out = []
    for k, class_id in enumerate(class_ids, start=1):
        mask = labels == class_id
        if not mask.any():
            continue
        parts, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
        sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
        order = [p for p in np.argsort(-sizes, kind="stable") if sizes[p] >= min_pixels][:max_per_class]
        out.extend((k, parts == p + 1) for p in order)
    return out


def refine_plane(labels: np.ndarray, class_ids: Sequence[int],
                 decode: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
                 params: RefineParams) -> np.ndarray:
    """One slice's labels refined.

    labels: (H, W) label values (0 background, else one of class_ids).
    decode: (N, 4) boxes, optional (N, H, W) mask prompts -> (N, H, W) probabilities (BoxPrompter.decode
            bound to the slice's embedding); only called when there is a component to refine.
    Returns a new (H, W) array of the same dtype; a plane without components comes back unchanged.
    """
    parts = components(labels, class_ids, params.min_pixels, params.max_components)
    if not parts:
        return labels
    lut = np.array([0] + list(class_ids), labels.dtype)
    boxes = np.stack([box_of(mask, params.margin) for _, mask in parts])
    masks = np.stack([mask for _, mask in parts]).astype(np.float32) if params.mask_prompt else None
    probabilities = decode(boxes, masks)
    decoded = np.zeros((len(class_ids) + 1, *labels.shape), np.float32)
    replaced = np.zeros(decoded.shape, bool)
    for (k, mask), box, prob in zip(parts, boxes, probabilities):
        inside = np.where(box_region(box, labels.shape), prob, 0).astype(np.float32)  # the box bounds the object
        area, coarse = int((inside > 0.5).sum()), int(mask.sum())
        if area == 0 or area > params.max_growth * coarse or area * params.max_growth < coarse:
            continue  # implausible: the component stays as it was
        replaced[k] |= mask
        np.maximum(decoded[k], inside, out=decoded[k])
    # Kept components (implausible decodes, those too small or too many to prompt) score just above background,
    # so a confident decode of another class wins where they overlap.
    score = np.where((lut[:, None, None] == labels[None]) & ~replaced, FALLBACK, 0.0).astype(np.float32)
    score[0] = 0.5
    np.maximum(score, decoded, out=score)
    return lut[np.argmax(score, axis=0)]


class Refiner:
    """Refines predicted label planes with LiteMedSAM's decoder; loads LiteMedSAM on first use."""

    def __init__(self, params: SegmentationParams, device: torch.device | str = "cpu",
                 prompter_factory: Callable[[torch.device], BoxPrompter] = BoxPrompter):
        self.params = params
        self.device = torch.device(device)
        self._factory = prompter_factory
        self._prompter: BoxPrompter | None = None
        self.cache = EmbeddingCache(params.memory_budget_mb * 1024**2 // 4, params.cache_dir)
        self._setting: tuple | None = None  # (stack signature, classes, refine settings) of `_refined`
        self._refined: dict[int, tuple[bytes, np.ndarray]] = {}  # slice -> (digest of coarse labels, refined)

    @property
    def prompter(self) -> BoxPrompter:
        if self._prompter is None:
            self._prompter = self._factory(self.device)
        return self._prompter

    def refine(self, stack: ImageStack, labels: list[np.ndarray], indices: Sequence[int],
               class_ids: Sequence[int]) -> Generator[Progress, None, None]:
        """Refine labels[i] ((H_i, W_i) label values) in place for every i in `indices`; yields Progress per
        slice. Slices without a component to refine cost nothing (no embedding is computed for them)."""
        indices = list(indices)
        p = self.params
        # On / off / automatic does not change what a refinement gives, so it keeps the refined slices.
        setting = (stack.signature(), tuple(class_ids), replace(p.refine, enabled=None))
        if setting != self._setting:
            self._refined.clear()
            self._setting = setting
        for n, i in enumerate(indices):
            def decode(boxes, masks, i=i):  # called only when slice i has a component to refine
                embedding = self.cache.get(stack, i, self.prompter)
                plane = PlaneEmbedding(embedding.features.float(), embedding.shape, embedding.scale)
                return self.prompter.decode(plane, boxes, masks)

            # After a correction most slices come out of matching unchanged: their refinement is reused.
            coarse = hashlib.blake2b(labels[i].tobytes(), digest_size=16).digest()
            done = self._refined.get(i)
            if done is not None and done[0] == coarse and done[1].dtype == labels[i].dtype:
                labels[i] = done[1].copy()
            else:
                labels[i] = refine_plane(labels[i], class_ids, decode, p.refine)
                self._refined[i] = (coarse, labels[i].copy())
            yield Progress(n + 1, len(indices), f"refined slice {i + 1} of {len(stack)}")
