"""LiteMedSAM embeddings ahead of need, in idle time.

After a volume's refinement (core/refinement.py) the refiner has embedded only the slices with a predicted object.
A correction often extends an organ onto slices beyond them (on the CT sample, one corrected slice moved the
liver's first slice from 73 to 54: 19 slices with no embedding, ~15 CPU-s of LiteMedSAM's image encoder before
the corrected result was refined; BENCHMARKS.md, session 12 "reseg"). `embed_ahead` computes those embeddings
beforehand, while the user looks at the result: the slices up to RefineParams.ahead beyond each class's first and
last predicted slice (and any slice between them not embedded), nearest first, one slice per step so that the
caller (the widget's background job, plugin/streaming.py) can stop it between two slices. Nothing a segmentation
gives depends on it: an embedding is the same whenever it is computed.
"""

from __future__ import annotations

from typing import Generator, Sequence

import numpy as np

from .progress import Progress


def ahead_slices(labels: np.ndarray, class_ids: Sequence[int], skip: Sequence[int], reach: int) -> list[int]:
    """The slices of the (S, H, W) `labels` to embed ahead: for each class, those from `reach` before its first
    predicted slice to `reach` after its last, nearest to that span first (ties: lower index), none in `skip`
    (e.g. the painted slices)."""
    distance: dict[int, int] = {}
    for c in class_ids:
        present = np.flatnonzero(np.asarray(labels == c).reshape(len(labels), -1).any(1))
        if not len(present) or reach <= 0:
            continue
        first, last = int(present[0]), int(present[-1])
        for i in range(max(0, first - reach), min(len(labels), last + reach + 1)):
            d = max(first - i, i - last, 0)
            distance[i] = min(distance.get(i, d), d)
    skipped = set(int(i) for i in skip)
    return sorted((i for i in distance if i not in skipped), key=lambda i: (distance[i], i))


def embed_ahead(segmenter, result) -> Generator[Progress, None, int]:
    """Embed ahead of need the slices `ahead_slices` picks for `result` (a refined SegmentationResult of a volume
    of `segmenter`, a FewShotSegmenter), with its LiteMedSAM service; one Progress per slice; returns how many
    were computed. Nothing for 2D images, with refinement off, or RefineParams.ahead = 0. At most as many as the
    service keeps in memory beside the refined slices' own embeddings, which are never pushed out."""
    stack = segmenter._require_image().stack
    reach = segmenter.params.refine.ahead
    if not stack.is_volume or len(stack) < 2 or reach <= 0 or result.refinement is not None \
            or not segmenter.params.refine.enabled_for(stack, segmenter.device):
        return 0
    service = segmenter.refiner.service
    labels = np.asarray(result.labels)
    room = service.capacity - sum(1 for i in result.segmented_slices if labels[i].any())
    todo = []
    for i in ahead_slices(labels, result.class_ids, result.support_slices, reach):
        if len(todo) >= room:
            break
        if not service.has_embedding_of(stack, i):
            todo.append(i)
    for n, i in enumerate(todo, start=1):
        service.embedding_of(stack, i)
        yield Progress(n, len(todo), f"embedded slice {i + 1} of {len(stack)} ahead")
    return len(todo)
