"""Retrieval of the painted images most like the query (SegmentationParams.nearest_supports; image sets only).

With many painted images, one pool of prototypes averages unlike lesions (benign and malignant, round and
irregular, small and large, different machines). With `nearest_supports` = k > 0, each query image of an image set
is matched against the k painted images whose whole image looks most like it (cosine of their mean-pooled encoder
features: already computed, so it costs ~nothing), as in-context segmentation's prompt retrieval:

- the class maps (not background) come from those k images' local prototypes and their mean (global) prototypes;
  the background map stays the best match over every painted image;
- propose and select's support profile (the painted objects' sizes and appearance) is theirs.

    coarse, near = yield from nearest_scores(segmenter, groups, indices, similarity, support_set, class_ids)
    profiles = profiles_for(near, targets, n_classes, embedding_of)   # a dict, or query -> dict

Volumes (several slices) are never retrieved from: their painted slices are one scan's. With k at least the number
of painted images nothing changes (a 5-shot episode with k >= 5 is the default by construction).
Off by default: on BUSI 20-shot (5 episodes per seed, a loaded CPU) k = 8 gained on seed 0, where it was chosen
(0.819 -> 0.899), +0.008 on seed 1 and lost 0.21 on seed 2 (a benign lesion missed); BENCHMARKS.md, "BUSI: the
painted images most like the query" (session 15, helper "busi20"). The variants measured there (background from the
k nearest too, their appearance only or no profile of theirs, the global prototypes from every painted image) were
module switches until session 17; they are in commit b2b1b32.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .matching import PrototypeGroup
from .prototypes import global_prototypes

def descriptor(features: torch.Tensor) -> torch.Tensor:
    """(C, h, w) encoder features -> (C,) L2-normalised mean over the cells: the whole image in one vector."""
    return F.normalize(features.float().mean((1, 2)), dim=0)


def nearest(load: Callable[[int], torch.Tensor], query: int, supports: Sequence[int], k: int) -> list[int]:
    """The k of `supports` (slice indices) whose :func:`descriptor` has the highest cosine with the query's, most
    alike first (ties: lower index first). load: slice -> (C, h, w) features."""
    q = descriptor(load(query))
    sims = [float(q @ descriptor(load(i)).to(q.device)) for i in supports]
    order = sorted(range(len(supports)), key=lambda n: (-sims[n], supports[n]))
    return [supports[n] for n in order[:k]]


def applies(segmenter, support_set, indices: Sequence[int]) -> bool:
    """Whether retrieval changes this segmentation: k > 0, an image set (not a volume), fewer than all painted."""
    stack, k = segmenter.cache.stack, segmenter.params.nearest_supports
    return (k > 0 and support_set is not None and not stack.is_3d and bool(indices)
            and len(support_set.slice_indices) > k)


def nearest_scores(segmenter, groups, indices: Sequence[int], similarity: bool, support_set, class_ids: list[int]):
    """The segmenter's coarse scores (bounded.query_scores: slice -> (K + 1, h, w); bounded where it applies and no
    heatmaps are asked for, `similarity`) and, where :func:`applies`, each
    query's class maps from its k nearest painted images (background from every painted image). Returns (coarse, near:
    query -> its nearest support slices; {} when off). A generator (Progress), like the matching."""
    from .bounded import bounded_applies, query_scores

    offsets, cache = segmenter.adaptation.offsets_for(class_ids), segmenter.cache
    bounded = (segmenter.bounded and support_set is not None and not similarity
               and bounded_applies(cache, groups, indices))
    coarse = yield from query_scores(segmenter, groups, indices, bounded, offsets)
    if not applies(segmenter, support_set, indices) or not isinstance(groups, list):
        return coarse, {}
    k = segmenter.params.nearest_supports
    supports = support_set.slice_indices
    pieces = segmenter._pieces(support_set)
    near = {}
    for i in indices:
        if i in supports:
            continue
        near[i] = nearest(cache.get, i, supports, k)
        chosen = [g for g in groups[1:] if g.key[2] in set(near[i])]
        painted = [k for k in range(1, len(class_ids) + 1) if any((support_set.targets[s] == k).any() for s in near[i])]
        top = groups[0]
        if len(painted) == len(class_ids):
            means = global_prototypes([p for key, p in pieces.items() if key[2] in set(near[i])], support_set.class_ids)
            top = PrototypeGroup.make(None, means, torch.arange(len(class_ids) + 1, device=means.device), len(class_ids))
        mine = yield from query_scores(segmenter, [top] + chosen, [i], False, offsets)
        scores = coarse[i].copy()  # a class none of the nearest holds keeps its map from every painted image
        scores[painted] = mine[i][painted]
        coarse[i] = scores
    return coarse, near


def profiles_for(near: dict[int, list[int]], targets: dict[int, np.ndarray], n_classes: int,
                 embedding_of: Callable | None = None):
    """select_objects.support_profiles of every painted image (a dict: class position -> profile) when `near` is
    empty; else query -> the profiles (sizes and appearance) of its nearest painted images, made when a query asks."""
    from .select_objects import support_profiles

    if not near:
        return support_profiles(targets, n_classes, embedding_of)
    return lambda query: support_profiles({i: targets[i] for i in near.get(query, targets)}, n_classes, embedding_of)
