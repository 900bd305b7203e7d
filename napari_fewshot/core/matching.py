"""Matching query slices to prototypes, remembered per prototype group so a correction redoes only itself.

A class's score at a query cell is its best cosine similarity over the class's prototypes (PANet's
cosine; SSL-ALPNet's local prototypes). The local prototypes come from support slices, so the best
over all of them is the maximum, over support slices, of each slice's own best match. :class:`MatchCache`
keeps that (K + 1, h, w) map per (query slice, prototype group); after a stroke or a corrected slice
only the changed group is matched again. A group whose key is None (the global prototypes: K + 1
vectors averaged over all support slices, so they change with every stroke) is matched every time,
which is cheap.

The matrix products run in bfloat16 where the processor does that natively (see
:func:`matmul_dtype`), else in float32; every group's map is kept in float16 whether it was cached or
not, so a cached and a fresh re-segmentation give the same labels.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_COLUMNS = 4096  # prototypes per matrix product: bounds the (h*w, _COLUMNS) temporary


@dataclass(frozen=True)
class PrototypeGroup:
    """Prototypes matched (and cached) together.

    key:     identity for the cache (None: never cached). Must change whenever the vectors do.
    vectors: (P, C) L2-normalised, sorted by owner so each class is one block.
    bounds:  K + 2 offsets: class k's prototypes are vectors[bounds[k]:bounds[k + 1]].
    """

    key: Hashable | None
    vectors: torch.Tensor
    bounds: tuple[int, ...]

    @classmethod
    def make(cls, key: Hashable | None, vectors: torch.Tensor, owner: torch.Tensor, n_classes: int) -> "PrototypeGroup":
        """vectors: (P, C) any norm; owner: (P,) class index 0..n_classes."""
        order = torch.argsort(owner.cpu(), stable=True)
        counts = torch.bincount(owner.cpu(), minlength=n_classes + 1)[: n_classes + 1]
        bounds = (0, *torch.cumsum(counts, 0).tolist())
        vectors = F.normalize(vectors.float(), dim=1)[order.to(vectors.device)]
        return cls(key, vectors, tuple(int(b) for b in bounds))

    @property
    def n_classes(self) -> int:
        return len(self.bounds) - 2


@functools.lru_cache(maxsize=4)
def matmul_dtype(device_type: str) -> torch.dtype:
    """bfloat16 where it is native (CUDA; CPUs with AVX512-BF16/AMX, measured 4.5x faster than float32 on
    this project's CPU with a cosine error ~1e-3), float32 elsewhere: a 20 ms probe decides on a CPU."""
    if device_type == "cuda":
        return torch.bfloat16
    if device_type != "cpu":
        return torch.float32
    a, b = torch.randn(512, 256), torch.randn(256, 512)

    def seconds(dtype: torch.dtype) -> float:
        x, y = a.to(dtype), b.to(dtype)
        x @ y
        start = time.perf_counter()
        for _ in range(3):
            x @ y
        return time.perf_counter() - start

    return torch.bfloat16 if seconds(torch.bfloat16) < 0.7 * seconds(torch.float32) else torch.float32


def query_cells(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C, h, w) features -> (h * w, C) L2-normalised rows in `dtype`."""
    c = features.shape[0]
    return F.normalize(features.float().reshape(c, -1).T, dim=1).to(dtype)


def group_similarity(query: torch.Tensor, group: PrototypeGroup) -> torch.Tensor:
    """Best cosine similarity of each query cell to each class of `group`.

    query: (N, C) from :func:`query_cells`. Returns (K + 1, N) float16; -1 for a class with no prototype here.
    """
    n_classes = group.n_classes
    best = torch.full((n_classes + 1, query.shape[0]), -1.0, device=query.device)
    vectors = group.vectors.to(query.device, query.dtype)
    for k in range(n_classes + 1):
        lo, hi = group.bounds[k], group.bounds[k + 1]
        for start in range(lo, hi, _COLUMNS):
            sims = query @ vectors[start:min(hi, start + _COLUMNS)].T
            best[k] = torch.maximum(best[k], sims.amax(1).float())
    return best.to(torch.float16)


class MatchCache:
    """Per (query slice, group key): that group's (K + 1, h, w) float16 best-similarity map; per query
    slice key: its normalised cells (see :func:`query_cells`).

    budget: bytes of maps kept, query_budget: bytes of normalised query cells kept; past them, values are
    computed but not stored (a 512 x 512 x 600 CT with 20 support slices and 4 classes at 384 px needs
    ~0.6 GB of maps and ~1.3 GB of query cells).
    """

    def __init__(self, budget: int = 1024**3, query_budget: int = 512 * 1024**2):
        self.budget = budget
        self.query_budget = query_budget
        self._maps: dict[tuple, torch.Tensor] = {}
        self._queries: dict[Hashable, torch.Tensor] = {}
        self.nbytes = 0
        self.query_nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._maps)

    def retain(self, keys: Sequence[Hashable]) -> None:
        """Forget the maps of every group not in `keys` (the support changed)."""
        keep = set(keys)
        for key in [k for k in self._maps if k[1] not in keep]:
            self.nbytes -= self._maps.pop(key).numel() * 2

    def clear(self) -> None:
        self._maps.clear()
        self._queries.clear()
        self.nbytes = self.query_nbytes = 0

    def _query(self, key: Hashable, load: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        """(normalised cells (h * w, C), (h, w)) of the query slice `key`, from `load()` -> (C, h, w) if new."""
        found = self._queries.get(key)
        if found is None:
            features = load()
            found = query_cells(features, matmul_dtype(features.device.type)), tuple(features.shape[-2:])
            size = found[0].numel() * found[0].element_size()
            if self.query_nbytes + size <= self.query_budget:
                self._queries[key] = found
                self.query_nbytes += size
        return found

    def class_similarity(self, key: Hashable, load: Callable[[], torch.Tensor],
                         groups: Sequence[PrototypeGroup]) -> torch.Tensor:
        """Best similarity of one query slice to each class over all `groups`.

        key: the slice's identity, which must change when its features do (e.g. (cache generation, index));
        load: returns its features (C, h, w), called only when they are needed and not remembered.
        Returns (K + 1, h, w) float32, the maximum of the groups' maps.
        """
        best = None
        for group in groups:
            map_key = (key, group.key)
            found = self._maps.get(map_key) if group.key is not None else None
            if found is None:
                query, (h, w) = self._query(key, load)
                found = group_similarity(query, group).reshape(-1, h, w)
                if group.key is not None:
                    self.misses += 1
                    if self.nbytes + found.numel() * 2 <= self.budget:
                        self._maps[map_key] = found
                        self.nbytes += found.numel() * 2
            else:
                self.hits += 1
            best = found.float() if best is None else torch.maximum(best, found.float())
        return best
