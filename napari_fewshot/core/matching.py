"""Matching query slices to prototypes, remembered per prototype group so a correction redoes only itself.

A class's score at a query cell is its best cosine similarity over the class's prototypes (PANet's
cosine; SSL-ALPNet's local prototypes). The local prototypes come from support slices, so the best
over all of them is the maximum, over support slices, of each slice's own best match. :class:`MatchCache`
keeps that (K + 1, h, w) map per (query slice, prototype group); after a stroke or a corrected slice
only the changed group is matched again. A group whose key is None (the global prototypes: K + 1
vectors averaged over all support slices, so they change with every stroke) is matched every time,
which is cheap.

The matrix products run in bfloat16 where the processor does that natively, else in int8 where it has VNNI,
else in float32 (core/precision.py :func:`matmul_dtype`); in bfloat16 on prototypes centred so that bfloat16
keeps the differences between classes (see :func:`group_similarity`); maps are kept in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .precision import int8_products, matmul_dtype, quantise_group, quantise_rows, unpack_rows
from .prototypes import SlicePrototypes, capped_local

__all__ = ["matmul_dtype"]  # re-exported: core/precision.py decides it

_COLUMNS = 4096  # prototypes per matrix product: bounds the (h*w, _COLUMNS) temporary
_ROWS = 16384  # query cells (of several slices) per matrix product: with _COLUMNS, ~128 MB of bfloat16


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


def local_group(key: Hashable, piece: SlicePrototypes, n_classes: int, max_local: int, seed: int,
                slice_index: int, sampling: str = "random") -> PrototypeGroup | None:
    """One support slice's local prototypes (prototypes.capped_local) as a group keyed `key`; None if it has none."""
    vectors, owner, origins = capped_local(piece, n_classes, max_local, seed, slice_index, sampling)
    return PrototypeGroup.make(key, vectors, owner, n_classes, origins) if len(vectors) else None


def query_cells(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C, h, w) features -> (h * w, C) L2-normalised rows in `dtype`, row-major (contiguous); for torch.int8
    (h * w, C + 4) packed rows (core/precision.py quantise_rows: each row's values, then its float32 scale)."""
    c = features.shape[0]
    rows = F.normalize(features.float().reshape(c, -1).T, dim=1)
    return quantise_rows(rows) if dtype == torch.int8 else rows.to(dtype).contiguous()


def group_similarity(query: torch.Tensor, group: PrototypeGroup) -> torch.Tensor:
    """Best cosine similarity of each query cell to each class of `group`.

    query: (N, C) from :func:`query_cells`. Returns (K + 1, N) float32; -1 for a class with no prototype here.
    In bfloat16 the products use the group's prototypes minus their mean: a cell's similarities to all of
    them then share one offset (the cell against the mean, added back in float32), which changes no maximum,
    and the values left are small, where bfloat16's 8-bit mantissa is fine-grained (cosines near 1 would be
    rounded to steps of 0.004 and could tie between classes). float32 needs no centring: the prototypes are
    used as they are, and the cell against the mean is not computed.
    """
    return _Prepared(group, query.device, query.dtype).best(query)


def group_similarities(queries: Sequence[torch.Tensor], group: PrototypeGroup) -> list[torch.Tensor]:
    """:func:`group_similarity` of many query slices at once: [(N_i, C)] -> [(K + 1, N_i) float32].

    The group is prepared (centred, cast) once, and the slices' cells are stacked into products of about
    _ROWS rows: on a 2-core CPU a hundred small products, each waiting for both threads, cost several times
    one large one (and the centring, redone per slice, cost as much as the products).
    """
    if not queries:
        return []
    prepared = _Prepared(group, queries[0].device, queries[0].dtype)
    out: list[torch.Tensor] = []
    for chunk in _row_chunks([len(q) for q in queries]):
        stacked = _Stacked([queries[i] for i in chunk])
        out += stacked.split(prepared.best(stacked.cells, stacked.as_float()))
    return out


class _Stacked:
    """Query cells of several slices stacked for one product: cells (sum N_i, C), and (made once, for
    every group that needs it) their float32 copy for the centring's offset."""

    def __init__(self, queries: Sequence[torch.Tensor], cells: torch.Tensor | None = None):
        self.sizes = [len(q) for q in queries]
        if cells is None:
            cells = queries[0] if len(queries) == 1 else torch.cat(list(queries))
        self.cells = cells
        self._float = None

    def as_float(self) -> torch.Tensor | None:
        """(sum N_i, C) float32, or None when the cells are float32 or int8 (no centring then)."""
        if self.cells.dtype in (torch.float32, torch.int8):
            return None
        if self._float is None:
            self._float = self.cells.float()
        return self._float

    def split(self, best: torch.Tensor) -> list[torch.Tensor]:
        """(K + 1, sum N_i) -> [(K + 1, N_i)] contiguous."""
        return [part.contiguous() for part in best.split(self.sizes, dim=1)]


def _row_chunks(sizes: Sequence[int]) -> list[list[int]]:
    """Consecutive indices of `sizes` grouped so that each group holds at most _ROWS rows (or one item)."""
    chunks, rows = [[]], 0
    for i, n in enumerate(sizes):
        if chunks[-1] and rows + n > _ROWS:
            chunks.append([])
            rows = 0
        chunks[-1].append(i)
        rows += n
    return [c for c in chunks if c]


class _Prepared:
    """A group's prototypes ready for products with query cells of one device and dtype (see
    :func:`group_similarity` for the centring in bfloat16)."""

    def __init__(self, group: PrototypeGroup, device: torch.device, dtype: torch.dtype):
        self.bounds = group.bounds
        vectors, self.mean, self.scale = group.vectors.to(device), None, None
        if dtype == torch.int8:  # (C, P) int8 columns and their one scale (core/precision.py)
            self.vectors, self.scale = quantise_group(vectors)
            return
        if dtype != torch.float32:
            self.mean = vectors.mean(0)
            vectors = vectors - self.mean
        self.vectors = vectors.to(dtype)

    def best(self, query: torch.Tensor, query_float: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) query cells -> (K + 1, N) float32 best similarity per class (query_float: the cells in
        float32 when the caller has them, for the offset)."""
        n_classes = len(self.bounds) - 2
        best = torch.full((n_classes + 1, query.shape[0]), -1.0, device=query.device) if query.device.type != "cpu" else \
            torch.from_numpy(np.full((n_classes + 1, query.shape[0]), -1.0, np.float32))  # torch's waits for threads
        offset, row_scale = None, None
        if self.mean is not None:
            offset = (query.float() if query_float is None else query_float) @ self.mean
        if self.scale is not None:  # int8: exact int32 products, each class's maximum scaled once per row
            query, row_scale = unpack_rows(query)
            row_scale = row_scale * self.scale
        # One product per block of at most _COLUMNS prototypes (usually one for the whole group), each class's
        # maximum taken from its columns: few, large operations (on a busy 2-core machine every small one
        # waits for both threads to be scheduled, and a class-by-class loop cost more than the products).
        total = self.bounds[-1]
        for start in range(0, total, _COLUMNS):
            stop = min(total, start + _COLUMNS)
            sims = query @ self.vectors[start:stop].T if row_scale is None else \
                int8_products(query, self.vectors[:, start:stop])
            for k in range(n_classes + 1):
                lo, hi = max(self.bounds[k], start), min(self.bounds[k + 1], stop)
                if hi > lo:
                    found = sims[:, lo - start:hi - start].amax(1).float()
                    found = found if row_scale is None else found * row_scale
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
        self._stacks: dict[tuple, torch.Tensor] = {}  # a chunk's slice keys -> their cells, stacked once
        self._prepared: dict[tuple, _Prepared] = {}  # (group key, device, dtype) -> the group centred and cast
        self._groups: dict[Hashable, PrototypeGroup] = {}  # group key -> the group (see :meth:`group`)
        self._partial: dict[tuple, object] = {}  # (slice key, group key) -> core/bounded.Partial
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
        for key in [k for k in self._prepared if k[0] not in keep]:
            del self._prepared[key]
        for key in [k for k in self._partial if k[1] not in keep]:
            self.nbytes -= self._partial.pop(key).values.numel() * 4
        self._groups = {k: g for k, g in self._groups.items() if k in keep}

    def clear(self) -> None:
        self._maps.clear()
        self._queries.clear()
        self._stacks.clear()
        self._prepared.clear()
        self._groups.clear()
        self._partial.clear()
        self.nbytes = self.query_nbytes = 0

    def keep(self, key: tuple, entry) -> None:
        """Remember a (slice key, group key) map (K + 1, h, w), or a core/bounded.Partial match, within the budget."""
        partial = hasattr(entry, "pending")
        size = (entry.values if partial else entry).numel() * 4
        store = self._partial if partial else self._maps
        if key not in store and self.nbytes + size <= self.budget:
            store[key] = entry
            self.nbytes += size
            self.misses += 1

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
        return next(self.class_similarities([key], [load], groups))

    def class_similarities(self, keys: Sequence[Hashable], loads: Sequence[Callable[[], torch.Tensor]],
                           groups: Sequence[PrototypeGroup]) -> Iterator[torch.Tensor]:
        """:meth:`class_similarity` of many query slices, yielded in order: the maps missing from the cache
        are computed a few slices (up to _ROWS cells) at a time, one product per group for all of them."""
        pending: list[int] = []
        loaded: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}  # this chunk's query cells, loaded once
        prepared: dict[int, _Prepared] = {}  # each group centred and cast once for all the chunks
        rows = 0
        for n, key in enumerate(keys):
            if self._missing(key, groups):
                query = self._query(key, loads[n])
                if pending and rows + len(query[0]) > _ROWS:
                    yield from self._flush(keys, groups, pending, loaded, prepared)
                    pending, loaded, rows = [], {}, 0
                loaded[n] = query
                rows += len(query[0])
            pending.append(n)
        yield from self._flush(keys, groups, pending, loaded, prepared)

    def group(self, key: Hashable, make: Callable[[], PrototypeGroup | None]) -> PrototypeGroup | None:
        """The group of `key`, made by `make()` (None: no prototypes) the first time it is asked for and
        remembered until :meth:`retain` drops the key: a correction changes one support slice, and sorting and
        normalising every other slice's prototypes again cost as much as a tenth of the re-segmentation."""
        if key not in self._groups:
            self._groups[key] = make()
        return self._groups[key]

    def _stacked(self, keys: list, cells: list[torch.Tensor]) -> "_Stacked":
        """The cells of the slices `keys` stacked for one product, remembered: a correction matches the same
        chunks of slices as the segmentation before it, and stacking them again (~200 MB for the CT sample) cost
        a fifth of the matching. Stored only when every slice's cells are kept; they become views of the stack,
        so it costs no memory beyond theirs."""
        key = tuple(keys)
        found = self._stacks.get(key)
        if found is not None:
            return _Stacked(cells, found)
        stacked = _Stacked(cells)
        if len(cells) > 1 and all(k in self._queries for k in keys):
            for old in [k for k in self._stacks if not set(keys).isdisjoint(k)]:  # another chunking: superseded
                del self._stacks[old]
                for k in set(old) - set(keys):  # their own copy, so that the old stack's memory is freed
                    self._queries[k] = (self._queries[k][0].clone(), self._queries[k][1])
            self._stacks[key] = stacked.cells
            for k, part in zip(keys, stacked.cells.split(stacked.sizes)):
                self._queries[k] = (part, self._queries[k][1])
        return stacked

    def _prepare(self, group: PrototypeGroup, device: torch.device, dtype: torch.dtype) -> "_Prepared":
        """`group` centred and cast for products (remembered by its key: every group but the changed one is the
        same at the next correction)."""
        if group.key is None:
            return _Prepared(group, device, dtype)
        key = (group.key, str(device), dtype)
        if key not in self._prepared:
            self._prepared[key] = _Prepared(group, device, dtype)
        return self._prepared[key]

    def _missing(self, key: Hashable, groups: Sequence[PrototypeGroup]) -> bool:
        return any(g.key is None or (key, g.key) not in self._maps for g in groups)

    def _flush(self, keys, groups, pending: list[int], loaded: dict, prepared: dict) -> Iterator[torch.Tensor]:
        """Match the slices `pending` (indices into keys; `loaded`: the query cells and grid of those that
        miss a map; `prepared`: group position -> its _Prepared, filled as needed) against the groups whose
        maps they lack, then yield each slice's (K + 1, h, w) maximum over all groups."""
        computed: dict[tuple, torch.Tensor] = {}
        stacked = None  # the cells of every loaded slice, stacked once for all the groups that miss them all
        for g, group in enumerate(groups):
            todo = [n for n in pending if group.key is None or (keys[n], group.key) not in self._maps]
            if not todo:
                continue
            if len(todo) == len(loaded):
                stacked = stacked or self._stacked([keys[n] for n in todo], [loaded[n][0] for n in todo])
                rows = stacked
            else:
                rows = _Stacked([loaded[n][0] for n in todo])
            if g not in prepared:
                prepared[g] = self._prepare(group, rows.cells.device, rows.cells.dtype)
            found = rows.split(prepared[g].best(rows.cells, rows.as_float()))
            for n, sim in zip(todo, found):
                sim = sim.reshape(-1, *loaded[n][1])
                computed[(keys[n], group.key)] = sim
                if group.key is not None:
                    self.misses += 1
                    if self.nbytes + sim.numel() * 4 <= self.budget:
                        self._maps[(keys[n], group.key)] = sim
                        self.nbytes += sim.numel() * 4
        for n in pending:
            best = None
            for group in groups:
                found = computed.get((keys[n], group.key))
                if found is None:
                    found = self._maps[(keys[n], group.key)]
                    self.hits += 1
                best = found if best is None else torch.maximum(best, found)
            yield best
