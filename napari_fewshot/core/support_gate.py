"""Keep a support image's foreground prototypes only where they help the other signed images (image sets).

On an image set every signed image is support, and its local foreground prototypes are matched against
every other image. Some lesions look like plain tissue elsewhere: their prototypes then fire on the
background of other images and a new box can make the rest of the set worse (BENCHMARKS, "The correction
loop, session 8": one boxed image blew five other predictions up to a fifth of their image).

The signed images are a labelled validation set for this. Leave one out: each signed image i is segmented
on the feature grid from the other signed images' prototypes only (the coarse step, no LiteMedSAM), and
scored by Dice against its own mask. A support k is *gated* (its foreground prototypes, local and its share
of the global mean, are left out; its background ones kept; its mask stays as signed) when leaving them out
raises the mean leave-one-out Dice of the others by more than GateParams.min_gain. Gates are added greedily,
the most helpful first, up to GateParams.max_gates; every class keeps at least one ungated support. Volumes
are not gated (their supports are slices of one scan, whose neighbours are the validation's own context).

Opt-in (`SupportGate(params).install(segmenter)`, `evaluate_busi_boxes(gate=...)`); nothing uses it by
default: on BUSI it helped the prototype step on one of the two loops it was measured on and cost a little
on the other (BENCHMARKS.md, "The correction loop, session 9").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .matching import PrototypeGroup, group_similarities, local_group, matmul_dtype, query_cells
from .prototypes import SlicePrototypes, capped_local
from .support import SupportSet
from .uncertainty import cell_labels


@dataclass
class GateParams:
    """min_gain: the rise of the mean leave-one-out Dice (over the other signed images, on the feature grid)
    a gate must bring to be kept; min_supports: fewer signed images than this: nothing is gated (too few to
    validate on); max_gates: at most this many supports gated (None: no limit)."""

    min_gain: float = 0.01
    min_supports: int = 4
    max_gates: int | None = 1


def grid_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    """Mean over classes 1..K of Dice between (h, w) label grids; a class absent from both scores 1."""
    scores = []
    for k in range(1, n_classes + 1):
        p, r = pred == k, ref == k
        total = p.sum() + r.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(p, r).sum() / total)
    return float(np.mean(scores))


class LeaveOneOut:
    """Per-support coarse scores on the other supports, computed once; scores any gate set cheaply.

    pieces: support slice -> its pooled prototypes; features: slice -> (C, h, w) tensor getter;
    targets: slice -> (H, W) int target (0 bg, 1..K, -1 ignore); max_local / seed / sampling as the segmenter's.
    """

    def __init__(self, pieces: Mapping[int, SlicePrototypes], features: Callable[[int], torch.Tensor],
                 targets: Mapping[int, np.ndarray], n_classes: int, max_local: int, seed: int = 0,
                 sampling: str = "random"):
        self.n = n_classes
        self.slices = sorted(pieces)
        self.pieces = pieces
        self.maps: dict[tuple[int, int], torch.Tensor] = {}  # (query i, support k) -> (K + 1, h*w)
        self.refs, self.cells, self.grids = {}, {}, {}
        dtype = None
        for i in self.slices:
            feat = features(i)
            dtype = dtype or matmul_dtype(feat.device.type)
            self.cells[i] = query_cells(feat, dtype)
            self.grids[i] = tuple(feat.shape[-2:])
            self.refs[i] = cell_labels(np.asarray(targets[i]), self.grids[i])
        for k in self.slices:
            vectors, owner, _ = capped_local(pieces[k], n_classes, max_local, seed, k, sampling)
            if not len(vectors):
                continue
            group = PrototypeGroup.make(None, vectors, owner, n_classes)
            others = [i for i in self.slices if i != k]
            for i, sim in zip(others, group_similarities([self.cells[i] for i in others], group)):
                self.maps[(i, k)] = sim

    def _global(self, i: int, gated: frozenset) -> torch.Tensor:
        """(K + 1, h*w) similarity of query i to the mean prototypes of the other supports (gated ones'
        foreground left out); -1 for a class with no ungated support."""
        c = next(iter(self.pieces.values())).means.shape[1]
        sums, shots = torch.zeros(self.n + 1, c), torch.zeros(self.n + 1)
        for k in self.slices:
            if k == i:
                continue
            piece = self.pieces[k]
            present = (piece.mass > 0).cpu()
            if k in gated:
                present[1:] = False
            sums[present] += piece.means.cpu().float()[present]
            shots[present] += 1
        owner = torch.nonzero(shots > 0)[:, 0]
        group = PrototypeGroup.make(None, sums[owner] / shots[owner, None], owner, self.n)
        sim = group_similarities([self.cells[i]], group)[0]
        sim[shots == 0] = -1.0
        return sim

    def dice(self, i: int, gated: frozenset) -> float:
        """Grid Dice of support i predicted from the others, with `gated` supports' foreground left out."""
        best = self._global(i, gated)
        for k in self.slices:
            sim = self.maps.get((i, k))
            if sim is None:
                continue
            if k in gated:
                best[0] = torch.maximum(best[0], sim[0])
            else:
                best = torch.maximum(best, sim)
        pred = best.argmax(0).reshape(self.grids[i]).numpy()
        return grid_dice(pred, self.refs[i], self.n)

    def mean_dice(self, gated: frozenset) -> float:
        """Mean leave-one-out Dice over all supports."""
        return float(np.mean([self.dice(i, gated) for i in self.slices]))


def choose_gates(loo: LeaveOneOut, params: GateParams | None = None,
                 candidates: Sequence[int] | None = None) -> tuple[frozenset, list[dict]]:
    """Greedy gate set: add the candidate whose gate raises the mean leave-one-out Dice most, while that rise
    exceeds params.min_gain and every class keeps an ungated support. Returns (gated slices, the steps:
    [{"gated": k, "mean_dice": after}], starting with {"gated": None, "mean_dice": ungated})."""
    params = params or GateParams()
    gated: frozenset = frozenset()
    current = loo.mean_dice(gated)
    steps = [{"gated": None, "mean_dice": current}]
    if len(loo.slices) < params.min_supports:
        return gated, steps
    pool = list(loo.slices if candidates is None else candidates)
    while params.max_gates is None or len(gated) < params.max_gates:
        best_k, best = None, current + params.min_gain
        for k in pool:
            if k in gated or not _keeps_classes(loo, gated | {k}):
                continue
            score = loo.mean_dice(gated | {k})
            if score > best:
                best_k, best = k, score
        if best_k is None:
            return gated, steps
        gated, current = gated | {best_k}, best
        steps.append({"gated": best_k, "mean_dice": current})
    return gated, steps


def _keeps_classes(loo: LeaveOneOut, gated: frozenset) -> bool:
    """Whether every class still has an ungated support with that class painted."""
    return all(any(loo.pieces[k].mass[c] > 0 for k in loo.slices if k not in gated) for c in range(1, loo.n + 1))


def gate_support(segmenter, support_set: SupportSet, params: GateParams | None = None) -> tuple[frozenset, list]:
    """The gates for `support_set` on `segmenter`'s current image set (features computed for the support)."""
    pieces = segmenter._pieces(support_set)
    by_slice = {key[2]: piece for key, piece in pieces.items()}
    stack = segmenter.cache.stack
    loo = LeaveOneOut(by_slice, segmenter.cache.get, support_set.targets, support_set.n_classes,
                      *segmenter.params.local_cap_for(stack))
    return choose_gates(loo, params)


def gated_groups(segmenter, support_set: SupportSet, gated: frozenset) -> list[PrototypeGroup]:
    """The segmenter's prototype groups (its `_groups`) with the `gated` supports' foreground left out of
    the local groups and of the global means; gated groups get their own cache key."""
    pieces = segmenter._pieces(support_set)
    n = support_set.n_classes
    sums, shots = None, torch.zeros(n + 1)
    groups = []
    cap, seed, how = segmenter.params.local_cap_for(segmenter.cache.stack)
    for key, piece in pieces.items():
        present = (piece.mass > 0).cpu()
        if key[2] in gated:
            present[1:] = False
        if sums is None:
            sums = torch.zeros_like(piece.means)
        sums[present.to(sums.device)] += piece.means[present.to(sums.device)]
        shots[present] += 1
        # the segmenter's own key (segmenter._groups): ungated groups are shared
        mine = key + (cap, seed if how == "random" else how)
        if key[2] in gated:
            vectors, owner, origins = capped_local(piece, n, cap, seed, key[2], how)
            keep = owner == 0
            vectors, owner, origins = vectors[keep], owner[keep], origins[keep.to(origins.device)]
            group = PrototypeGroup.make((*mine, "gated"), vectors, owner, n, origins) if len(vectors) else None
        else:
            group = segmenter._matches.group(mine, partial(local_group, mine, piece, n, cap, seed, key[2], how))
        if group is not None:
            groups.append(group)
    means = sums / shots.clamp(min=1).to(sums.device)[:, None]
    glob = PrototypeGroup.make(None, means, torch.arange(n + 1, device=means.device), n)
    return [glob, *groups]


class SupportGate:
    """Gates a segmenter's image-set support on every segment: `install` wraps the segmenter's prototype
    groups (its `_groups`), so Segment, the preview and Check next all see the gated prototypes; a volume,
    or a support of fewer than params.min_supports images, is passed through unchanged. `history` keeps
    each segment's (gated slices, greedy steps)."""

    def __init__(self, params: GateParams | None = None):
        self.params = params or GateParams()
        self.history: list[dict] = []

    def install(self, segmenter) -> "SupportGate":
        plain = segmenter._groups

        def groups(support_set: SupportSet):
            stack = segmenter.cache.stack
            if stack.is_3d or segmenter.params.self_support is not None:
                return plain(support_set)
            gated, steps = gate_support(segmenter, support_set, self.params)
            self.history.append({"gated": sorted(gated), "steps": steps})
            return gated_groups(segmenter, support_set, gated) if gated else plain(support_set)

        segmenter._groups = groups
        return self
