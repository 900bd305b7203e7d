"""Coarse first, refined as it arrives: LiteMedSAM refinement (core/refine.py) after the coarse result.

`FewShotSegmenter.segment(..., refine_later=True)` (and `segment_with`) returns the prototype result at
once, cleaned up and ranked as without refinement, holding a `PendingRefinement`: the cleaned coarse labels
(what the one-call path refines too) and the finishing step. Then
`FewShotSegmenter.refine_result(result, first=...)` refines slice by slice in `refine_order` (the slices
asked for first, then outward from the painted ones), yielding a `RefinedSlice` per slice, and at its end
runs the clean-up and Check next's ranking on the refined labels: the same labels the one-call path gives.

A refined slice arrives before the 3D clean-up of the refined labels, which needs every slice;
`provisional_plane` keeps of it only what overlaps the cleaned coarse slice (each class's refined components
that overlap it), so a stray piece of a decoded mask does not show for the time the refinement runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from .postprocess import bounding_window
from .progress import Progress, Stop, check_stop


@dataclass
class PendingRefinement:
    """What `refine_result` needs of a coarse result.

    coarse:  what is refined, a copy: a volume's coarse labels after the clean-up (core/finishing.py), 2D
             images' before it (the largest object is chosen after refinement), as the one-call path refines.
    cleaned: the coarse labels after the clean-up (what the result shows; (S, H, W) array, or a list of
             (H_i, W_i)), a copy, for `provisional_plane`.
    indices: the predicted slices to refine (the copied support slices are not).
    painted: the support slices (refinement spreads out from them).
    finish:  the segmenter's finishing step (clean-up, then ranking) for a result, in place.
    stack:   the core.stack.ImageStack segmented (refine_result refuses another).
    """

    coarse: np.ndarray | list[np.ndarray]
    cleaned: np.ndarray | list[np.ndarray]
    indices: list[int]
    painted: list[int]
    finish: Callable = field(repr=False)
    stack: object = field(default=None, repr=False)

    @classmethod
    def finish_coarse(cls, result, stack, finish: Callable, indices: Sequence[int], painted: Sequence[int]) -> None:
        """`finish` the coarse `result` (a SegmentationResult) in place and leave it a PendingRefinement of
        `indices` in result.refinement."""
        raw = copy_labels(result.labels)
        finish(result)
        cleaned = copy_labels(result.labels)
        coarse = copy_labels(cleaned) if stack.is_3d else raw
        result.refinement = cls(coarse, cleaned, list(indices), sorted(painted), finish, stack)


@dataclass(frozen=True)
class RefinedSlice(Progress):
    """A Progress report of `refine_result` carrying one refined slice.

    index: the slice; plane: its (H_i, W_i) labels as shown until the clean-up (`provisional_plane`).
    """

    index: int = -1
    plane: np.ndarray | None = field(default=None, repr=False, compare=False)


def refine_order(indices: Sequence[int], first: Sequence[int] = (), painted: Sequence[int] = ()) -> list[int]:
    """`indices` in refinement order: those in `first` (in its order), then the rest by distance to the
    nearest painted slice (to `first` when nothing is painted), nearer first, ties by index."""
    wanted = list(dict.fromkeys(int(i) for i in indices))
    members = set(wanted)
    head = [i for i in dict.fromkeys(int(i) for i in first) if i in members]
    anchors = np.array(sorted(set(painted) or set(first)), dtype=np.int64)
    rest = [i for i in wanted if i not in set(head)]
    if len(anchors):
        rest.sort(key=lambda i: (int(np.abs(anchors - i).min()), i))
    else:
        rest.sort()
    return head + rest


def provisional_plane(refined: np.ndarray, cleaned: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """A refined slice as shown before the clean-up: of each class, the refined 8-connected components that
    overlap the class on the cleaned coarse slice; the rest becomes background.

    refined, cleaned: (H, W) label values of the same slice. Returns a new (H, W) array of refined's dtype."""
    out = refined.copy()
    for c in class_ids:
        mask = refined == c
        if not mask.any():
            continue
        kept = cleaned == c
        if not kept.any():
            out[mask] = 0
            continue
        window = bounding_window(mask)  # the class's bounding box
        parts, count = ndimage.label(mask[window], structure=np.ones((3, 3), bool))
        touching = np.unique(parts[(kept & mask)[window]])
        out[window][mask[window] & ~np.isin(parts, touching[touching > 0])] = 0
    return out


def refine_stream(refiner, result, first: Sequence[int] = (), stop: Stop | None = None):
    """The work of `FewShotSegmenter.refine_result`: refine result.refinement's slices with `refiner` (a
    core.refine.Refiner) in `refine_order`, yielding a RefinedSlice per slice; returns a new
    SegmentationResult with the refined labels, finished (clean-up and ranking) by the pending step.
    `stop` (core.progress.check_stop): checked inside each step (Refiner.refine) and before the finishing step;
    raises Stopped."""
    pending: PendingRefinement = result.refinement
    labels, class_ids = copy_labels(pending.coarse), list(result.class_ids)
    order = refine_order(pending.indices, first, pending.painted)
    for n, report in enumerate(refiner.refine(pending.stack, labels, order, class_ids, stop=stop)):
        i = order[n]
        yield RefinedSlice(report.done, report.total, report.message, index=i,
                           plane=provisional_plane(labels[i], pending.cleaned[i], class_ids))
    check_stop(stop)
    final = dataclasses.replace(result, labels=labels, uncertainty={}, refinement=None)
    pending.finish(final, refined=True)
    return final


def copy_labels(labels):
    """A copy of a result's labels: an (S, H, W) array, or a list of (H_i, W_i) planes."""
    return labels.copy() if isinstance(labels, np.ndarray) else [np.array(p, copy=True) for p in labels]
