"""Flipped and rescaled views of 2D images, for few shots (SegmentationParams.support_augment, query_flip).

With 3-20 painted images the prototypes see few lesion appearances, each in one orientation and at one size.
Two cheap views add some (image sets and 2D images only; a volume's slices are never augmented):

- support views: the painted images are encoded again mirrored left-right ("flip": the target mirrored too) and
  rescaled ("scale": the encoder's input size x0.8 and x1.25, the same target pooled on the coarser / finer grid);
  each view of each painted image adds its masked averages to the global prototypes (a mean over every view) and
  its local prototypes as one more matching group (cached like the image's own, see core/matching.py). Ultrasound
  has a fixed up-down orientation (skin at the top, shadowing below), so nothing is flipped upside down.
- query flip: each query image is encoded mirrored too, matched against the same groups, and its class maps,
  mirrored back, are averaged with the image's own before proposals (one more encoder pass and matching).

Each view's features live in their own FeatureCache (memory only, nothing persisted), made on first use and
forgotten with the image or its features (a new image, fine-tuned weights: the main cache's generation).

Both off by default (BENCHMARKS.md, "Flipped and rescaled views", session 21): BUSI 5-shot, 50 episodes, the query
flip gained on both development seeds (+0.031 / +0.022) but +0.005 / -0.003 on the held-out ones (pooled over the four,
+0.013 +- 0.014 per episode), for +0.15 CPU-s per image; the support views were measured on the development seeds
only (flip -0.007 / +0.027, scale +0.033 / +0.008; 2x / 3x the local prototypes, +0.03 / +0.06 CPU-s of matching).

    views = Views()
    extra = views.support_pieces(segmenter, support_set, pieces)    # key + (view,) -> SlicePrototypes
    coarse = yield from views.query_flip(segmenter, groups, indices, coarse, class_ids)
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import torch

from .features import FeatureCache
from .prototypes import SlicePrototypes, pool_slice

VIEWS = {"none": (), "flip": ("flip",), "scale": ("x0.8", "x1.25"), "flip+scale": ("flip", "x0.8", "x1.25")}
SCALES = {"x0.8": 0.8, "x1.25": 1.25}


def applies(segmenter) -> bool:
    """Whether the current image is 2D images (an image set or one image), where views are used."""
    stack = segmenter.cache.stack
    return not stack.is_3d


def mirror_cells(cells: torch.Tensor, width: int) -> torch.Tensor:
    """(L, 2) cells (y, x) on a mirrored grid of `width` columns -> the same cells on the unmirrored grid."""
    out = cells.clone()
    out[:, 1] = width - 1 - cells[:, 1]
    return out


MAX_OFFSET = 3  # cells: the largest offset of a mirrored grid looked for, see :func:`mirror_offset`


def shifted(maps: torch.Tensor, offset: float) -> torch.Tensor:
    """(..., w) -> (..., w): column k takes the value at fractional column k - offset (linear; clamped at the edges)."""
    w = maps.shape[-1]
    x = (torch.arange(w, dtype=torch.float32) - offset).clamp(0, w - 1)
    lo = x.floor().long()
    hi = (lo + 1).clamp(max=w - 1)
    a = (x - lo).to(maps.dtype)
    return maps[..., lo] * (1 - a) + maps[..., hi] * a


def mirror_offset(own: torch.Tensor, mirrored: torch.Tensor) -> float:
    """How far (in whole cells, 0..MAX_OFFSET) a mirrored image's features, reversed, sit left of the image's own.

    own, mirrored: (C, h, w) features of the image and of its mirror. Reversing the columns is the whole inverse only
    for a grid centred where the code assumes: the network's own maps were ~2 cells off (lite0 at 384 px) before
    core/encoders/efficientnet_lite.py centred them, and an encoder with a native grid may still be.
    The offset kept is the one whose shifted reversed features best match the image's own (mean cosine over the
    columns every shift covers): measured, so it holds for any encoder and input width. A fractional shift scores a
    mix of its two neighbours' scores, so the best is always a whole cell. ~5 ms for a 48-column lite0 grid."""
    own = torch.nn.functional.normalize(own.float(), dim=0)
    back = torch.nn.functional.normalize(mirrored.float(), dim=0).flip(-1)
    w = own.shape[-1]
    top = min(MAX_OFFSET, max(0, (w - 1) // 3))
    if top == 0:
        return 0.0
    scores = [float((own[..., top:w - top] * back[..., top - n:w - top - n]).sum(0).mean()) for n in range(top + 1)]
    return float(np.argmax(scores))


def unflip_scores(scores: np.ndarray, offset: float) -> np.ndarray:
    """Class maps of a mirrored image, (K + 1, h, w) on its grid -> on the image's own grid: the columns reversed,
    then moved right by `offset` cells (:func:`mirror_offset`)."""
    back = torch.from_numpy(np.ascontiguousarray(scores[..., ::-1]))
    return shifted(back, offset).numpy().astype(scores.dtype)


class Views:
    """The segmenter's mirrored and rescaled feature caches, and the support pieces pooled from them."""

    def __init__(self):
        self._caches: dict[str, FeatureCache] = {}
        self._pooled: dict[tuple, SlicePrototypes] = {}
        self._owner: tuple | None = None

    def cache(self, segmenter, view: str) -> FeatureCache:
        """The FeatureCache of `view` ("flip", "x0.8", "x1.25") of the segmenter's current image."""
        main = segmenter.cache
        owner = (id(main), main.generation, id(main.encoder))
        if owner != self._owner:
            self._caches.clear()
            self._pooled.clear()
            self._owner = owner
        if view not in self._caches:
            stack = main.stack.flipped() if view == "flip" else main.stack
            size = main.input_size
            if view in SCALES and size is not None:
                size = max(32, round(size * SCALES[view]))
            self._caches[view] = FeatureCache(main.encoder, stack, main.device, size, main.batch_size,
                                              main.memory_budget // 4, None, None)
        views = self._caches[view]
        views.adapter = main.adapter
        return views

    def support_pieces(self, segmenter, support_set, pieces: dict) -> dict[tuple, SlicePrototypes]:
        """The painted images' extra pieces under SegmentationParams.support_augment. pieces: the segmenter's own
        (FewShotSegmenter._pieces: key (id, generation, slice, paint digest, class ids) -> pooled slice); each view's
        key is that key + (view,) -> the view's pooled slice, its local cells on the original image's grid where it
        can say (mirrored; a rescaled grid's cells rescaled)."""
        p = segmenter.params
        if not applies(segmenter) or not VIEWS[p.support_augment] or p.prototype_mode != "local":
            return {}
        cache, memo = segmenter.cache, {}
        for view in VIEWS[p.support_augment]:
            if view in SCALES and cache.input_size is None:
                continue  # native size: no input size to rescale
            views = self.cache(segmenter, view)
            for key in pieces:
                i = key[2]
                piece = self._pooled.get(key + (view,))
                if piece is None:
                    piece = self._pool(views, view, i, support_set.targets[i], support_set.n_classes, p,
                                       cache.get(i).shape[-2:])
                memo[key + (view,)] = piece
        self._pooled = memo
        return memo

    @staticmethod
    def _pool(views: FeatureCache, view: str, i: int, target: np.ndarray, n_classes: int, p, grid):
        features = views.get(i)
        if view == "flip":
            target = target[:, ::-1]
        piece = pool_slice(features, torch.from_numpy(np.ascontiguousarray(target)).long(), n_classes,
                           p.prototype_mode, p.local_grid, p.local_coverage)
        if piece.local_cells is not None and len(piece.local_cells):
            if view == "flip":
                piece.local_cells = mirror_cells(piece.local_cells, features.shape[-1])
            else:  # the nearest cell of the image's own grid
                h, w = features.shape[-2:]
                scale = torch.tensor([grid[0] / h, grid[1] / w])
                cells = ((piece.local_cells.float() + 0.5) * scale).floor().long()
                piece.local_cells = torch.minimum(cells, torch.tensor([grid[0] - 1, grid[1] - 1]))
        return piece

    def query_flip(self, segmenter, groups, indices: Sequence[int], coarse: dict, class_ids: list[int]):
        """With SegmentationParams.query_flip on 2D images: each of `indices`' coarse maps (K + 1, h, w) averaged
        with its mirror's (matched against the same `groups`, mirrored back; Fine-tune's class offsets added as
        to the image's own). `coarse` is changed in place and returned. A generator (Progress), like matching."""
        if not segmenter.params.query_flip or not applies(segmenter) or not isinstance(groups, list) or not indices:
            return coarse
        views = self.cache(segmenter, "flip")
        yield from views.compute(indices)
        offsets = segmenter.adaptation.offsets_for(class_ids)
        keys = [(id(views), views.generation, i) for i in indices]
        with torch.no_grad():
            sims = segmenter._matches.class_similarities(keys, [partial(views.get, i) for i in indices], groups)
            for i, sim in zip(indices, sims):
                offset = mirror_offset(segmenter.cache.get(i), views.get(i))
                mirrored = unflip_scores(sim.cpu().numpy(), offset)
                if offsets is not None:
                    mirrored = mirrored + offsets[:, None, None].astype(mirrored.dtype)
                coarse[i] = ((coarse[i] + mirrored) / 2).astype(coarse[i].dtype)
        return coarse
