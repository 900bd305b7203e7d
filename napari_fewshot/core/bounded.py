"""Matching a volume only where it can change a label: the same labels as matching everything, fewer products.

A support slice's local prototypes are mostly background (~1,750 of its ~1,920 cells on the CT sample), yet
background's best match decides a label only where another class comes close. So each prototype group is
first matched without its largest class (its "deferred" class, usually background): the other classes exactly
at every cell, the deferred one nowhere. That gives, per query cell and class, a lower bound of the score
(the exact best over what was matched; the global prototypes and the groups matched fully before are always
exact) and an upper bound (the same, but LOOSE_HIGH where a deferred class is still unknown). Both go through
the same smoothing across slices as the scores (a positive-weighted sum: floating-point rounding is monotone,
so the bounds stay bounds). A cell is *settled* where the lower bound of its winner beats the upper bound of
every other class: its winner is the exact one. The deferred classes are then matched exactly at the cells
whose values the labels read (predict.labels_from_scores): the unsettled cells, every cell next to a change of
winner (bilinear upsampling mixes those), and, through the smoothing, the same cells of the neighbouring
slices. The labels are those of the full computation, bit for bit (the products of a subset of rows and
columns give the same values as the full ones; tests/test_bounded.py checks the labels on the CT sample).

The scores are exact only where the labels needed them; :meth:`BoundedScores.settle` makes more cells exact
when asked (Check next's boundary band, core/uncertainty.py). What was matched is kept in the MatchCache
(``partial``), so the next correction starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from .matching import MatchCache, PrototypeGroup, _Prepared, _row_chunks as _chunks

LOOSE_HIGH = 4.0  # upper bound of an unknown score (a cosine, at most 1 plus bfloat16's or int8's rounding)
LOOSE_LOW = -4.0  # lower bound of an unknown score


@dataclass
class Partial:
    """One query slice's match to one group, but for `deferred`'s score at the `pending` cells.

    values: (K + 1, n) float32, exact but for values[deferred, pending] (LOOSE_LOW there); pending: (n,) bool."""

    values: torch.Tensor
    deferred: int
    pending: np.ndarray


def deferred_class(group: PrototypeGroup) -> int:
    """The class with the most prototypes in `group` (the one matched only where needed)."""
    sizes = np.diff(group.bounds)
    return int(np.argmax(sizes))


def _rows(parts: Sequence[torch.Tensor], picks: Sequence[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Query cells (N_i, C) of several slices (rows `picks[i]` of each, or all) stacked -> (cells, their float32
    copy or None for float32 cells and for int8's packed (N_i, C + 4) rows, whose scales move with them). Moved
    by numpy: on a busy 2-core machine torch's gathers and concatenations of bfloat16 wait for both threads at
    every call (18 ms against numpy's 0.02 ms for one slice's rows)."""
    bf16 = parts[0].dtype == torch.bfloat16
    arrays = [p.view(torch.int16).numpy() if bf16 else p.numpy() for p in parts]
    if picks is not None:
        arrays = [a[c] for a, c in zip(arrays, picks)]
    stacked = np.concatenate(arrays) if len(arrays) > 1 else np.ascontiguousarray(arrays[0])
    if not bf16:
        return torch.from_numpy(stacked), None
    wide = stacked.view(np.uint16).astype(np.uint32)
    as_float = np.left_shift(wide, 16, out=wide).view(np.float32)  # bfloat16 -> float32, exact, in place
    return torch.from_numpy(stacked).view(torch.bfloat16), torch.from_numpy(as_float)


def _subset(prepared: _Prepared, classes: Sequence[int]) -> _Prepared:
    """`prepared` restricted to the prototypes of `classes` (same centring, same int8 scale: the same products
    bit for bit; the other classes score -1)."""
    out = _Prepared.__new__(_Prepared)
    out.__dict__.update(prepared.__dict__)  # mean, scale
    columns = prepared.scale is not None  # int8: (C, P) columns, else (P, C) rows
    blocks = [(prepared.bounds[k], prepared.bounds[k + 1]) for k in range(len(prepared.bounds) - 1)]
    bounds, parts, at = [0], [], 0
    for k, (lo, hi) in enumerate(blocks):
        if k in classes:
            parts.append(prepared.vectors[:, lo:hi] if columns else prepared.vectors[lo:hi])
            at += hi - lo
        bounds.append(at)
    empty = prepared.vectors[:, :0] if columns else prepared.vectors[:0]
    out.vectors = torch.cat(parts, 1 if columns else 0).contiguous() if parts else empty
    out.bounds = tuple(bounds)
    return out


class BoundedScores(dict):
    """Slice index -> (K + 1, h, w) float32 scores (smoothed across slices), whose argmax is exact at every cell
    and whose values are exact where the labels read them; :meth:`settle` makes other cells exact on request.

    Made by :func:`bounded_scores`; keeps what it needs to match more cells (the groups, their partial maps, the
    query slices' loaders)."""

    def __init__(self, cache: MatchCache, keys: Sequence[Hashable], loads: Sequence[Callable[[], torch.Tensor]],
                 indices: Sequence[int], groups: Sequence[PrototypeGroup], sigma: float, grid: tuple[int, int]):
        super().__init__()
        self.cache, self.keys, self.loads, self.indices = cache, list(keys), list(loads), list(indices)
        self.groups, self.sigma, self.grid = list(groups), sigma, grid
        self.radius = int(2.0 * sigma + 0.5) if sigma > 0 and len(indices) > 1 else 0  # smooth_similarity's truncate
        self.entries: list[list] = [[] for _ in indices]  # per slice, per group: full tensor or Partial
        self.prepared: dict[int, _Prepared] = {}
        self.matched_rows = 0  # rows matched against a deferred class (for benchmarks)

    # -- bounds ----------------------------------------------------------------------------------
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) raw scores (S, K + 1, n), S the query slices in order."""
        lows, highs = [], []
        for entries in self.entries:
            low = None
            for e in entries:
                if e is None:  # a group this slice is not matched against
                    continue
                v = e.values.numpy() if isinstance(e, Partial) else e.numpy().reshape(e.shape[0], -1)
                low = v.copy() if low is None else np.maximum(low, v, out=low)
            high = low.copy()
            for e in entries:
                if isinstance(e, Partial) and e.pending.any():
                    high[e.deferred, e.pending] = LOOSE_HIGH
            lows.append(low)
            highs.append(high)
        return np.stack(lows), np.stack(highs)

    def _smooth(self, raw: np.ndarray) -> np.ndarray:
        """postprocess.smooth_similarity of the query slices' raw scores, as a (S, K + 1, n) stack."""
        from .postprocess import smooth_similarity

        maps = smooth_similarity(dict(zip(self.indices, raw)), self.sigma) if self.radius else dict(zip(self.indices, raw))
        return np.stack([maps[i] for i in self.indices])

    def _near(self, cells: np.ndarray) -> np.ndarray:
        """(S, n) bool cells whose smoothed value is wanted -> the raw cells it reads (same cell, slices within the
        smoothing's radius)."""
        if not self.radius:
            return cells
        out = cells.copy()
        pos = {i: p for p, i in enumerate(self.indices)}
        for p, i in enumerate(self.indices):
            for d in range(1, self.radius + 1):
                for j in (i - d, i + d):
                    if j in pos:
                        out[pos[j]] |= cells[p]
        return out

    # -- matching the deferred classes -----------------------------------------------------------
    def _match(self, need: np.ndarray) -> None:
        """Match the deferred classes at the cells `need` (S, n) bool where they are pending."""
        for g, group in enumerate(self.groups):
            todo = []
            for p, entries in enumerate(self.entries):
                e = entries[g]
                if isinstance(e, Partial):
                    cells = e.pending & need[p]
                    if cells.any():
                        todo.append((p, np.flatnonzero(cells)))
            if not todo:
                continue
            deferred = self.entries[todo[0][0]][g].deferred
            only = _subset(self.prepared[g], [deferred])
            cells = [self.cache._query(self.keys[p], self.loads[p])[0] for p, _ in todo]
            for chunk in _chunks([len(c) for _, c in todo]):
                rows, as_float = _rows([cells[n] for n in chunk], [todo[n][1] for n in chunk])
                best = only.best(rows, as_float)[deferred].numpy()
                at = 0
                for n in chunk:
                    p, c = todo[n]
                    e = self.entries[p][g]
                    e.values.numpy()[deferred, c] = best[at:at + len(c)]
                    e.pending[c] = False
                    at += len(c)
                    self.matched_rows += len(c)

    def _unsettled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(smoothed lower, smoothed upper (S, K + 1, n), unsettled (S, n) bool: the winner by the lower bounds may
        not be the exact winner)."""
        low, high = self._bounds()
        slow, shigh = self._smooth(low), self._smooth(high)
        winner = slow.argmax(1)  # (S, n)
        rival = np.where(np.arange(slow.shape[1])[None, :, None] == winner[:, None, :], -np.inf, shigh).max(1)
        return slow, shigh, ~(np.take_along_axis(slow, winner[:, None, :], 1)[:, 0] > rival)

    def labels_ready(self, size: tuple[int, int]) -> None:
        """Match what the labels of (H, W) = `size` slices need (the module's docstring), then fill self with the
        smoothed scores. First the unsettled cells; then the cells of each pixel between different winners
        whose label the bounds, interpolated as predict.labels_from_scores interpolates scores, leave open."""
        self._match(self._near(self._unsettled()[2]))
        slow, shigh, unsettled = self._unsettled()
        need = unsettled.copy()
        for p in range(len(self.indices)):
            need[p] |= _open_pixels(slow[p].reshape(-1, *self.grid), shigh[p].reshape(-1, *self.grid), size)
        self._match(self._near(need))
        self._fill()

    def settle(self, cells: Mapping[int, np.ndarray]) -> "BoundedScores":
        """Make the smoothed scores exact at `cells` (slice index -> (h, w) bool); returns self, updated."""
        want = np.zeros((len(self.indices), self.grid[0] * self.grid[1]), bool)
        pos = {i: p for p, i in enumerate(self.indices)}
        for i, mask in cells.items():
            if i in pos:
                want[pos[i]] = np.asarray(mask, bool).reshape(-1)
        need = self._near(want)
        if any(isinstance(e, Partial) and (e.pending & need[p]).any()
               for p, entries in enumerate(self.entries) for e in entries):
            self._match(need)
            self._fill()
        return self

    def _fill(self) -> None:
        low, _ = self._bounds()
        smooth = self._smooth(low).reshape(len(self.indices), -1, *self.grid)
        for p, i in enumerate(self.indices):
            self[i] = smooth[p]


def _open_pixels(low: np.ndarray, high: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cells (h * w,) bool whose exact scores a pixel of the (H, W) labels needs: the corners of every pixel between
    different winners (by `low`, (K + 1, h, w), exact winners where settled) whose interpolated lower bound of its
    best class does not beat the interpolated upper bounds (`high`) of all the others."""
    from .predict import _bilinear_axis

    (y0, y1, wy), (x0, x1, wx) = _bilinear_axis(low.shape[1], size[0]), _bilinear_axis(low.shape[2], size[1])
    winner = low.argmax(0)
    h, w = winner.shape
    down, right = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    # a pixel's corners are the block of cells (y0, x0)..(y0 + 1, x0 + 1), clipped at the border: mixed blocks first
    block = ((winner != winner[down]) | (winner != winner[:, right]) | (winner != winner[down][:, right]))
    out = np.zeros(low.shape[1:], bool)
    pick_rows, pick_cols = np.flatnonzero(block.any(1)[y0]), np.flatnonzero(block.any(0)[x0])
    rows, cols = np.nonzero(block[np.ix_(y0[pick_rows], x0[pick_cols])])
    if not len(rows):
        return out.reshape(-1)
    rows, cols = pick_rows[rows], pick_cols[cols]
    ry0, ry1, rwy, cx0, cx1, cwx = y0[rows], y1[rows], wy[rows], x0[cols], x1[cols], wx[cols]

    def mixed(s):  # exactly predict.labels_from_scores' interpolation (monotone in s: the bounds stay bounds)
        return ((1 - rwy) * ((1 - cwx) * s[:, ry0, cx0] + cwx * s[:, ry0, cx1])
                + rwy * ((1 - cwx) * s[:, ry1, cx0] + cwx * s[:, ry1, cx1]))

    lo, hi = mixed(low), mixed(high)
    best = lo.argmax(0)
    hi[best, np.arange(len(best))] = -np.inf
    open_ = ~(lo[best, np.arange(len(best))] > hi.max(0))
    for ys, xs in ((ry0, cx0), (ry0, cx1), (ry1, cx0), (ry1, cx1)):
        out[ys[open_], xs[open_]] = True
    return out.reshape(-1)


def bounded_scores(cache: MatchCache, keys: Sequence[Hashable], loads: Sequence[Callable[[], torch.Tensor]],
                   indices: Sequence[int], groups: Sequence[PrototypeGroup], sigma: float,
                   size: tuple[int, int], uses: Sequence[Sequence[int]] | None = None) -> BoundedScores:
    """The query slices `indices` (keys and loaders as for MatchCache.class_similarities) matched to `groups`
    where the labels need it (module docstring). sigma: SegmentationParams.smooth_slices (0: no smoothing); size:
    (H, W) of the slices' labels; uses: per query slice, the positions of the groups it is matched against
    (core/slice_reach.py; None: all)."""
    first = cache._query(keys[0], loads[0])
    out = BoundedScores(cache, keys, loads, indices, groups, sigma, first[1])
    device, dtype = first[0].device, first[0].dtype
    for g, group in enumerate(groups):
        out.prepared[g] = cache._prepare(group, device, dtype)
    todo = {g: [] for g in range(len(groups))}
    for p, key in enumerate(keys):
        for g, group in enumerate(groups):
            if uses is not None and g not in uses[p]:  # a group this slice is not matched against (core/slice_reach.py)
                out.entries[p].append(None)
                continue
            found = cache._maps.get((key, group.key)) if group.key is not None else None
            found = found if found is not None else cache._partial.get((key, group.key))
            out.entries[p].append(found)
            if found is None:
                todo[g].append(p)
    # Deferring pays once earlier matches bound the scores (a correction); the first segmentation matches all.
    lazy = any(e is not None for entries in out.entries for e, g in zip(entries, groups) if g.key is not None)
    plans = {}  # group -> (prepared products, whether all its classes are matched, deferred class)
    for g, group in enumerate(groups):
        full, deferred = group.key is None or not lazy, deferred_class(group)
        classes = [k for k in range(len(group.bounds) - 1) if full or k != deferred]
        plans[g] = (out.prepared[g] if full else _subset(out.prepared[g], classes), full, deferred)
    union = sorted(set().union(*todo.values()))
    cells = {p: cache._query(keys[p], loads[p])[0] for p in union}
    for chunk in _chunks([len(cells[p]) for p in union]):  # stacked once for every group that lacks them all
        ps = [union[n] for n in chunk]
        shared = None
        for g, group in enumerate(groups):
            mine = [p for p in ps if p in set(todo[g])]
            if not mine:
                continue
            if mine == ps:
                shared = shared or _rows([cells[p] for p in ps])
            rows, as_float = shared if mine == ps else _rows([cells[p] for p in mine])
            prepared, full, deferred = plans[g]
            best = prepared.best(rows, as_float).numpy()
            at = 0
            for p in mine:
                part = best[:, at:at + len(cells[p])].copy()
                at += len(cells[p])
                if not full:
                    part[deferred] = LOOSE_LOW
                    out.entries[p][g] = Partial(torch.from_numpy(part), deferred, np.ones(part.shape[1], bool))
                else:
                    out.entries[p][g] = torch.from_numpy(part.reshape(-1, *out.grid))
                if group.key is not None:
                    cache.keep((keys[p], group.key), out.entries[p][g])
    out.labels_ready(size)
    return out


def bounded_applies(cache, groups, indices: Sequence[int]) -> bool:
    """Whether the segmenter's FeatureCache `cache` may match `groups` (not a PrototypeSet) to the slices `indices`
    this way: several slices of a volume, on the CPU (the row gathers use numpy)."""
    return (cache.stack.is_volume and len(indices) > 1 and isinstance(groups, list)
            and cache.device.type == "cpu")


def bounded_similarity(segmenter, groups: Sequence[PrototypeGroup], indices: Sequence[int], reach=None):
    """FewShotSegmenter's slice index -> (K + 1, h, w) scores of `indices`, smoothed across slices, exact where the
    labels read them (:func:`bounded_scores` on its MatchCache; reach: core/slice_reach.Reach or None); a generator
    (Progress) like its matching."""
    from .progress import Progress

    cache = segmenter.cache
    with torch.no_grad():
        out = bounded_scores(segmenter._matches, [(id(cache), cache.generation, i) for i in indices],
                             [partial(cache.get, i) for i in indices], indices, groups,
                             segmenter.params.smooth_slices, cache.stack.shape_of(indices[0]),
                             None if reach is None else [reach.uses(i) for i in indices])
    yield Progress(len(indices), len(indices), "matched")
    return out


def query_scores(segmenter, groups, indices: Sequence[int], bounded: bool, offsets: np.ndarray | None = None):
    """FewShotSegmenter's coarse scores of `indices` (slice -> (K + 1, h, w)), smoothed across the slices of a volume
    (SegmentationParams.smooth_slices): :func:`bounded_similarity` when `bounded`, else every cell matched.
    offsets: (K + 1,) added to each class's scores after the smoothing (Fine-tune "calibrate", core/calibration.py);
    with offsets every cell is matched (the bounds decide winners without them). Each slice of a volume is matched
    against the groups core/slice_reach.py gives it."""
    from .slice_reach import reach_of

    reach = reach_of(segmenter, groups)
    if bounded and offsets is None:
        return (yield from bounded_similarity(segmenter, groups, indices, reach))
    coarse = yield from coarse_similarity(segmenter, groups, indices, reach)
    if segmenter.params.smooth_slices > 0 and segmenter.cache.stack.is_volume and len(indices) > 1:
        from .postprocess import smooth_similarity

        coarse = smooth_similarity(coarse, segmenter.params.smooth_slices)
    if offsets is not None:
        coarse = {i: c + offsets[:, None, None].astype(c.dtype) for i, c in coarse.items()}
    return coarse


def coarse_similarity(segmenter, groups, indices: Sequence[int], reach=None):
    """FewShotSegmenter's slice index -> (K + 1, h, w) float32 best similarity per class on the feature grid, every
    cell matched: a few slices per matrix product (matching.MatchCache.class_similarities; with a
    core/slice_reach.Reach, each run of slices against the groups it uses), or, for one PrototypeSet (self-support),
    predict.query_similarity. A generator (Progress per 8 slices)."""
    from .memory import trim_now
    from .predict import query_similarity
    from .progress import Progress
    from .prototypes import PrototypeSet

    cache = segmenter._require_image()
    coarse = {}
    with torch.no_grad():
        if isinstance(groups, PrototypeSet):
            sims = (query_similarity(cache.get(i)[None], groups, segmenter.params.self_support)[0] for i in indices)
        else:
            runs = [(range(len(groups)), list(indices))] if reach is None else reach.runs(indices)
            sims = (sim for uses, run in runs for sim in segmenter._matches.class_similarities(
                [(id(cache), cache.generation, i) for i in run], [partial(cache.get, i) for i in run],
                [groups[g] for g in uses]))
        for n, (i, sim) in enumerate(zip(indices, sims)):
            coarse[i] = sim.cpu().numpy()
            trim_now(n + 1)
            if n % 8 == 7:
                yield Progress(n + 1, len(indices), f"matched slice {i + 1} of {len(cache.stack)}")
    return coarse
