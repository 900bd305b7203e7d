"""Why is this pixel liver? The painted cell whose prototype a prediction matched best.

Every local prototype comes from one cell of one painted slice (``PrototypeSet.origins``: (P, 3) long,
support slice, cell row, cell column; a merged prototype names a representative cell), and matching scores
a class at a query cell by its best prototype (core/matching.py). :class:`Explainer` finds that prototype
again on demand: for one pixel (:meth:`Explainer.explain`) or for every predicted pixel of a slice
(:meth:`Explainer.slice_map`), from the cached features and the prototypes the result was made with.
Nothing is computed or stored while segmenting (the segmenter only hands over how to get the prototypes),
so re-segmenting costs what it did; one slice's provenance costs about one matching of that slice.

Only local prototypes explain: the global ones average every painted slice, so they name no place. A pixel
whose class has no local prototype (global mode) gets an :class:`Origin` without a slice.

Coordinates: a pixel (y, x) of an (H, W) slice lies in feature cell (y * h // H, x * w // W) of its
(C, h, w) features; a cell (r, c) of a support slice is shown at its centre pixel.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from functools import partial
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FewShotError
from .matching import query_cells
from .progress import Progress
from .prototypes import PrototypeSet

OTHER_SCAN = "another scan"  # the source of ready prototypes (segment_with) until a caller names the bank
NO_SLICE = -1  # in provenance maps: a pixel predicted as background, or a class with no local prototype
_COLUMNS = 4096  # prototypes per matrix product: bounds the (cells, _COLUMNS) temporary


@dataclass(frozen=True)
class Origin:
    """Where the prototype that best matches one query pixel came from.

    class_id:   the label value predicted there (0: background).
    similarity: cosine similarity of the query cell to that prototype.
    slice:      support slice (image, for an image set) it was pooled from; None when no local prototype
                of the class exists, or the prototypes carry no origins (a bank from an older file).
    cell:       (row, col) on that slice's feature grid; pixel: its centre (y, x) on that slice; None
                when unknown, or when the slice belongs to another scan (a bank's).
    source:     "slice" or "image" (this scan's paint), or "bank scan NAME".
    """

    class_id: int
    similarity: float
    slice: int | None
    cell: tuple[int, int] | None
    pixel: tuple[int, int] | None
    source: str = "slice"

    def describe(self, class_names: dict[int, str] | None = None) -> str:
        """'looks like slice 86, painted liver, similarity 0.83' ('..., background, ...' for class 0); slices by
        index, as napari's slider shows them."""
        name = (class_names or {}).get(self.class_id) or f"label {self.class_id}"
        what = "background" if self.class_id == 0 else f"painted {name}"
        if self.slice is None:
            where = "the average of all painting" if self.source in ("slice", "image") else self.source
        elif self.source in ("slice", "image"):
            where = f"{self.source} {self.slice}"
        else:
            where = f"{self.source}, slice {self.slice}"
        return f"looks like {where}, {what}, similarity {self.similarity:.2f}"


@dataclass
class LocalPrototypes:
    """The local prototypes of a PrototypeSet, as explanation needs them.

    vectors: (L, C) float32 L2-normalised; owner: (L,) class index; origins: (L, 3) long (slice, row, col),
    all -1 where unknown.
    """

    vectors: torch.Tensor
    owner: torch.Tensor
    origins: torch.Tensor

    @classmethod
    def of(cls, prototypes: PrototypeSet) -> "LocalPrototypes":
        """The local part of `prototypes`, origins from ``prototypes.origins`` (-1 where it is None)."""
        local = ~prototypes.is_global.cpu()
        origins = prototypes.origins
        origins = (torch.full((int(local.sum()), 3), -1, dtype=torch.long) if origins is None
                   else origins.cpu()[local].long())
        return cls(prototypes.vectors[local.to(prototypes.vectors.device)].float(), prototypes.owner.cpu()[local],
                   origins)


def best_local(query: torch.Tensor, local: LocalPrototypes, class_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query cell, the best local prototype of class `class_index`.

    query: (N, C) L2-normalised float32 (matching.query_cells). Returns (index (N,) long into local.vectors,
    -1 where the class has no local prototype; similarity (N,) float32, -1 there).
    """
    columns = (local.owner == class_index).nonzero(as_tuple=True)[0]
    best = torch.full((query.shape[0],), -1.0)
    index = torch.full((query.shape[0],), -1, dtype=torch.long)
    vectors = local.vectors.to(query.device)
    for start in range(0, len(columns), _COLUMNS):
        chunk = columns[start:start + _COLUMNS]
        sims = (query @ vectors[chunk.to(query.device)].T).float().cpu()
        value, arg = sims.max(1)
        better = value > best
        best[better] = value[better]
        index[better] = chunk[arg[better]]
    return index, best


def cell_of(pixel: int, size: int, cells: int) -> int:
    """The feature cell (along one axis of `cells`) holding pixel `pixel` of a side of `size` pixels."""
    return min(cells - 1, pixel * cells // size)


def centre_of(cell: int, size: int, cells: int) -> int:
    """The pixel at the centre of feature cell `cell` (one axis; `size` pixels, `cells` cells)."""
    return min(size - 1, int((cell + 0.5) * size / cells))


class Explainer:
    """Explains one SegmentationResult: the prototypes it was made with, and the features they matched.

    cache:  the segmenter's FeatureCache (held weakly: a result never keeps an old image's features alive).
    plan:   (prototypes or a zero-argument callable returning them, slice indices or None for every slice)
            pairs, as FewShotSegmenter.segment_with takes them; a callable is called once, when first needed.
    source: "slice" / "image" for this scan's paint, or "bank scan NAME" (callers that know the bank's
            name set it; a bank's origins are cells of its own scan, so no pixel is given).
    reach:  core/slice_reach.Reach: a slice is explained only by the painted slices it was matched against.
    """

    def __init__(self, cache, plan: Sequence[tuple[PrototypeSet | Callable[[], PrototypeSet], Sequence[int] | None]],
                 source: str | None = None, reach=None):
        self._cache = weakref.ref(cache)
        self._generation = cache.generation
        self._plan = list(plan)
        self._local: dict[int, LocalPrototypes] = {}
        self._reach, self._reached = reach, {}
        self.source = source or ("slice" if cache.stack.is_volume else "image")

    @classmethod
    def for_support(cls, segmenter, support_set, groups=None) -> "Explainer":
        """The explainer of `segmenter.segment(support)` (groups: the prototype groups it matched, which decide each
        slice's reach): its prototypes, made again when first needed."""
        from .slice_reach import reach_of

        reach = reach_of(segmenter, groups) if groups is not None else None
        return cls(segmenter.cache, [(partial(segmenter.prototypes, support_set), None)], reach=reach)

    def _features(self):
        cache = self._cache()
        if cache is None or cache.generation != self._generation:
            raise FewShotError("The image or its features changed since this segmentation; segment again to "
                               "explain it.")
        return cache

    def _prototypes(self, z: int) -> tuple[LocalPrototypes, list[int]]:
        """The local prototypes that segmented slice `z`, and their class ids."""
        for n, (prototypes, indices) in enumerate(self._plan):
            if indices is None or z in indices:
                if not isinstance(prototypes, PrototypeSet):
                    prototypes = prototypes()
                    self._plan[n] = (prototypes, indices)
                if n not in self._local:
                    self._local[n] = LocalPrototypes.of(prototypes)
                return self._within_reach(self._local[n], z), list(prototypes.class_ids)
        raise FewShotError(f"Slice {z} was not segmented, so there is nothing to explain.")

    def _within_reach(self, local: LocalPrototypes, z: int) -> LocalPrototypes:
        """`local` less the prototypes of painted slices that slice `z` was not matched against."""
        if self._reach is None:
            return local
        key = (id(local), frozenset(self._reach.slices(z)))
        if key not in self._reached:
            keep = torch.isin(local.origins[:, 0], torch.tensor(sorted(key[1]), dtype=torch.long))
            self._reached[key] = LocalPrototypes(local.vectors[keep.to(local.vectors.device)], local.owner[keep],
                                                 local.origins[keep])
        return self._reached[key]

    def _origin(self, local: LocalPrototypes, index: int, class_id: int, similarity: float) -> Origin:
        if index < 0 or int(local.origins[index, 0]) < 0:
            return Origin(class_id, similarity, None, None, None, self.source)
        s, r, c = (int(v) for v in local.origins[index])
        pixel = None
        if self.source in ("slice", "image"):
            cache = self._features()
            h, w = cache.get(s).shape[-2:]
            height, width = cache.stack.shape_of(s)
            pixel = (centre_of(r, height, h), centre_of(c, width, w))
        return Origin(class_id, similarity, s, (r, c), pixel, self.source)

    def explain(self, labels, z: int, y: int, x: int) -> Origin:
        """The origin of the best prototype of the class predicted at pixel (y, x) of slice `z`.

        labels: the result's labels ((S, H, W) array or list of (H_i, W_i)). Raises FewShotError outside
        the slice or on a slice that was not segmented.
        """
        cache = self._features()
        if not 0 <= z < len(cache.stack):
            raise FewShotError(f"There is no slice {z}.")
        height, width = cache.stack.shape_of(z)
        if not (0 <= y < height and 0 <= x < width):
            raise FewShotError(f"Pixel ({y}, {x}) is outside slice {z} ({height} x {width}).")
        local, class_ids = self._prototypes(z)
        class_id = int(labels[z][y, x])
        k = class_ids.index(class_id) + 1 if class_id in class_ids else 0
        features = cache.get(z)
        h, w = features.shape[-2:]
        cell = features[:, cell_of(y, height, h), cell_of(x, width, w)]
        with torch.no_grad():
            index, sim = best_local(query_cells(cell[:, None, None], torch.float32), local, k)
        return self._origin(local, int(index[0]), class_id, float(sim[0]))

    def slice_map(self, labels_z: np.ndarray, z: int, background: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Provenance of every predicted pixel of slice `z`.

        labels_z: (H, W) the result's labels of slice z (an image set's padded plane is fine: the padding is
        unexplained). Returns (support (H, W) int32: the support slice whose prototype best matches each
        pixel's predicted class, NO_SLICE for background (unless `background`) and where unknown;
        similarity (H, W) float32 to that prototype, 0 there).
        """
        cache = self._features()
        local, class_ids = self._prototypes(z)
        features = cache.get(z)
        h, w = features.shape[-2:]
        support = np.full(labels_z.shape, NO_SLICE, np.int32)
        similarity = np.zeros(labels_z.shape, np.float32)
        height, width = cache.stack.shape_of(z)
        self._fill(features, labels_z[:height, :width], local, class_ids, background,
                   support[:height, :width], similarity[:height, :width])
        return support, similarity

    @staticmethod
    def _fill(features, labels_z, local, class_ids, background, support, similarity) -> None:
        """slice_map's work on the slice's own (H, W) grid, written into the views `support`, `similarity`."""
        h, w = features.shape[-2:]
        height, width = labels_z.shape
        rows = np.minimum(h - 1, np.arange(height) * h // height)
        cols = np.minimum(w - 1, np.arange(width) * w // width)
        cells = rows[:, None] * w + cols[None, :]  # (H, W) feature cell of each pixel
        wanted = [(k, c) for k, c in enumerate([0] + class_ids) if (background or k) and (labels_z == c).any()]
        if not wanted:
            return
        with torch.no_grad():
            query = query_cells(features, torch.float32)
            for k, class_id in wanted:
                index, sim = best_local(query, local, k)
                slice_of_cell = torch.where(index >= 0, local.origins[index.clamp_min(0), 0], NO_SLICE).numpy()
                where = labels_z == class_id
                support[where] = slice_of_cell[cells[where]]
                similarity[where] = sim.numpy()[cells[where]]

    def volume_maps(self, labels, indices: Sequence[int], background: bool = False,
                    ) -> Generator[Progress, None, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """:meth:`slice_map` of each slice in `indices`; yields Progress per slice, returns slice -> maps."""
        maps = {}
        for n, z in enumerate(indices):
            maps[z] = self.slice_map(np.asarray(labels[z]), z, background)
            yield Progress(n + 1, len(indices), f"explained slice {z} ({n + 1} of {len(indices)})")
        return maps


def bank_source(bank) -> str:
    """How an Origin names a PrototypeBank's scan: "bank scan NAME" (NAME: the image it was pooled from, as
    recorded in ``bank.sources``), or "bank of N scans" (a slice index alone would not say which)."""
    if len(bank.sources) != 1:
        return f"bank of {len(bank.sources)} scans"
    source = bank.sources[0]
    name = source.get("image") or source.get("image_layer") or "unnamed"
    return f"bank scan {Path(str(name)).name}"


class Explainable:
    """What a SegmentationResult (core/segmenter.py) gets from here: :meth:`explain`, through its
    ``explainer`` (an :class:`Explainer`, set by the segmenter) and its ``labels``."""

    def explain(self, z: int, y: int, x: int) -> Origin:
        """The painted cell whose prototype pixel (y, x) of slice z matched best (no encoder pass)."""
        if self.explainer is None:
            raise FewShotError("This result was not made by a segmenter, so it cannot be explained.")
        return self.explainer.explain(self.labels, z, y, x)


def explained_share(support: np.ndarray, painted: Sequence[int], z: int) -> float | None:
    """Share of the explained pixels of slice `z` (support (H, W) from :meth:`Explainer.slice_map`) whose
    prototype comes from the painted slice nearest to z (ties: the lower); None when nothing is explained."""
    explained = support[support != NO_SLICE]
    if not len(explained) or not len(painted):
        return None
    nearest = min(painted, key=lambda s: (abs(s - z), s))
    return float((explained == nearest).mean())
