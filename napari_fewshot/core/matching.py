"""Matching query slices to prototypes, remembered per prototype group so a correction redoes only itself.

A class's score at a query cell is its best cosine similarity over the class's prototypes (PANet's
cosine; SSL-ALPNet's local prototypes). The local prototypes come from support slices, so the best
over all of them is the maximum, over support slices, of each slice's own best match. :class:`MatchCache`
keeps that (K + 1, h, w) map per (query slice, prototype group); after a stroke or a corrected slice
only the changed group is matched again. A group whose key is None (the global prototypes: K + 1
vectors averaged over all support slices, so they change with every stroke) is matched every time,
which is cheap.

The matrix products run in bfloat16 where the processor does that natively (see
:func:`matmul_dtype`), else in float32, on prototypes centred so that bfloat16 keeps the differences
between classes (see :func:`group_similarity`); maps are kept in float32.
"""

from __future__ import annotations

import functools
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
    origins: (P, 3) long, aligned with `vectors`: each prototype's support slice and representative cell
             (y, x) on that slice's feature grid (see core/prototypes.py); -1 rows where unknown (the
             global prototypes, averaged over slices; a bank's).
    """

    key: Hashable | None
    vectors: torch.Tensor
    bounds: tuple[int, ...]
    origins: torch.Tensor | None = None

    @classmethod
    def make(cls, key: Hashable | None, vectors: torch.Tensor, owner: torch.Tensor, n_classes: int,
             origins: torch.Tensor | None = None) -> "PrototypeGroup":
        """vectors: (P, C) any norm; owner: (P,) class index 0..n_classes; origins: (P, 3) or None (all -1)."""
        order = torch.argsort(owner.cpu(), stable=True)
        counts = torch.bincount(owner.cpu(), minlength=n_classes + 1)[: n_classes + 1]
        bounds = (0, *torch.cumsum(counts, 0).tolist())
        vectors = F.normalize(vectors.float(), dim=1)[order.to(vectors.device)]
        if origins is None:
            origins = torch.full((len(order), 3), -1, dtype=torch.long)
        return cls(key, vectors, tuple(int(b) for b in bounds), origins.cpu().long()[order])

    @property
    def n_classes(self) -> int:
        return len(self.bounds) - 2


@functools.lru_cache(maxsize=4)
def matmul_dtype(device_type: str) -> torch.dtype:
    """bfloat16 where the hardware does it natively (CUDA; x86 CPUs with AVX512-BF16 or AMX, several times
    faster than float32 there), else float32. Decided from the CPU's flags, never from a timing, so the
    same machine always gives the same labels."""
    if device_type == "cuda":
        return torch.bfloat16
    if device_type == "cpu" and _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return torch.bfloat16
    return torch.float32


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def query_cells(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C, h, w) features -> (h * w, C) L2-normalised rows in `dtype`, row-major (contiguous)."""
    c = features.shape[0]
    return F.normalize(features.float().reshape(c, -1).T, dim=1).to(dtype).contiguous()


def group_similarity(query: torch.Tensor, group: PrototypeGroup) -> torch.Tensor:
    """Best cosine similarity of each query cell to each class of `group`.

    query: (N, C) from :func:`query_cells`. Returns (K + 1, N) float32; -1 for a class with no prototype here.
    In bfloat16 the products use the group's prototypes minus their mean: a cell's similarities to all of
    them then share one offset (the cell against the mean, added back in float32), which changes no maximum,
    and the values left are small, where bfloat16's 8-bit mantissa is fine-grained (cosines near 1 would be
    rounded to steps of 0.004 and could tie between classes). float32 needs no centring: the prototypes are
    used as they are, and the cell against the mean is not computed.
    """
    n_classes = group.n_classes
    best = torch.full((n_classes + 1, query.shape[0]), -1.0, device=query.device)
    vectors, offset = group.vectors.to(query.device), None
    if query.dtype != torch.float32:
        mean = vectors.mean(0)
        vectors, offset = vectors - mean, query.float() @ mean
    vectors = vectors.to(query.dtype)
    # One product per block of at most _COLUMNS prototypes (usually one for the whole group), each class's
    # maximum taken from its columns: few, large operations (on a busy 2-core machine every small one waits
    # for both threads to be scheduled, and a class-by-class loop cost more than the products themselves).
    for start in range(0, len(vectors), _COLUMNS):
        stop = min(len(vectors), start + _COLUMNS)
        sims = query @ vectors[start:stop].T
        for k in range(n_classes + 1):
            lo, hi = max(group.bounds[k], start), min(group.bounds[k + 1], stop)
            if hi > lo:
                found = sims[:, lo - start:hi - start].amax(1).float()
                best[k] = torch.maximum(best[k], found if offset is None else found + offset)
    return best


class MatchCache:
    """Per (query slice, group key): that group's (K + 1, h, w) float32 best-similarity map; per query
    slice key: its normalised cells (see :func:`query_cells`).

    budget: bytes of maps kept, query_budget: bytes of normalised query cells kept; past them, values are
    computed but not stored (a 512 x 512 x 600 CT with 20 support slices and 4 classes at 384 px needs
    ~1.2 GB of maps and ~1.3 GB of query cells).
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
            self.nbytes -= self._maps.pop(key).numel() * 4

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
                    if self.nbytes + found.numel() * 4 <= self.budget:
                        self._maps[map_key] = found
                        self.nbytes += found.numel() * 4
            else:
                self.hits += 1
            best = found if best is None else torch.maximum(best, found)
        return best
