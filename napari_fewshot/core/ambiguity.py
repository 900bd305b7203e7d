"""Ambiguity of an image's selection (issue 20 item 3): how close the best candidate *elsewhere* in the image
(not overlapping the kept object) scored to the kept one, from the scores propose and select already computed
(core/select_objects.py select_plane): no extra decode.

A confident miss (LiteMedSAM outlines a dark region beside the lesion well, so its own IoU estimate is high)
often has a rival: the lesion itself, drawn by another candidate, scoring nearly as well. A lone object that
stands out with nothing close behind it is a safer bet.

    record = rival_record(masks, fit, best, kept)       # in select_plane, per class
    sign = ambiguity(record)                             # in [0, 1], higher = check first
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

OVERLAP = 0.1
"""A candidate counts as *elsewhere* when at most this share of the smaller of it and the kept object lies in
the other (the overlap coefficient, at the decoder's own resolution): a redraw of the same object is no rival."""


def overlap_share(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / min(|a|, |b|) of two bool masks of one shape (0 when either is empty)."""
    small = min(np.count_nonzero(a), np.count_nonzero(b))
    return 0.0 if small == 0 else float(np.count_nonzero(a & b)) / small


def rival_record(masks: Sequence[np.ndarray], fit: Sequence[float], best: int,
                 kept: np.ndarray) -> tuple[float, list[tuple[float, float]]]:
    """One class's selection on one image: the N candidates' (h, w) bool masks at the decoder's own size, their
    N selection scores (fit[best]: the kept object's final score, after its redraw), the winner's index and the
    kept object's (h, w) bool mask at that size -> (the kept object's score, [(score, overlap_share with the kept
    object)] of the N - 1 others)."""
    others = [(float(fit[n]), overlap_share(m, kept)) for n, m in enumerate(masks) if n != best]
    return float(fit[best]), others


def runner_up(record: tuple[float, list[tuple[float, float]]], overlap: float = OVERLAP) -> float | None:
    """The best score among the record's candidates elsewhere (overlap share <= `overlap`); None when none."""
    scores = [s for s, share in record[1] if share <= overlap and np.isfinite(s)]
    return max(scores) if scores else None


RULE = "ratio"
"""What :func:`ambiguity` measures: "ratio", the best score elsewhere / the kept object's; "share", the share of the
image's candidates that lie elsewhere (how split the prototypes' evidence is; tried in session 20, BENCHMARKS.md)."""


def ambiguity(record: tuple[float, list[tuple[float, float]]] | None, overlap: float = OVERLAP,
              rule: str | None = None) -> float:
    """Runner-up elsewhere / kept object's score, clipped to [0, 1]: 1 when something elsewhere scores as well
    as the kept object, 0 when nothing elsewhere was proposed (`rule` "share", default :data:`RULE`: the share of
    candidates elsewhere). No record (no candidate, nothing drawn): 1."""
    if record is None:
        return 1.0
    if (RULE if rule is None else rule) == "share":
        return sum(share <= overlap for _, share in record[1]) / (1 + len(record[1]))
    other = runner_up(record, overlap)
    if other is None or not record[0] > 0:
        return 0.0 if other is None else 1.0
    return float(np.clip(other / record[0], 0.0, 1.0))


def selection_ambiguity(memo: dict, indices) -> dict[int, float]:
    """Image -> :func:`ambiguity` of its last selection (the highest over its classes), for the `indices` the
    selection memo (select_objects.select_planes': image -> (digest, labels, setting, rivals)) has rivals of;
    an image whose selection kept no candidate of any class: 1."""
    out = {}
    for i in indices:
        done = memo.get(i)
        if done is not None and len(done) > 3 and done[3] is not None:  # None: recorded with the sign off
            out[i] = max((ambiguity(r) for r in done[3].values()), default=1.0)
    return out


RIVAL_SAYS = 0.8
"""Check next names the rival (:func:`check_next_reason`) when another object scored at least this share of the
kept object's score."""


STANDOUT_SAYS = 0.5
"""Check next says the drawn object barely stands out when core/standout.py's sign reaches this (its contrast is at
most half of what a painted lesion shows)."""


def check_next_reason(sign: float, rival: float | None, weight: float, plain: float = 0.0,
                      standout_weight: float = 0.0) -> str:
    """Why Check next suggests an image of a set, for its status line: its sign (result.uncertainty: 1 - LiteMedSAM's
    IoU estimate + `weight` x the ambiguity `rival` (None: not measured) + `standout_weight` x `plain`,
    core/standout.py's sign of how little the drawn object stands out) -> a clause naming what ranked it."""
    estimate = sign - weight * (rival or 0.0) - standout_weight * plain  # LiteMedSAM's own estimate of the Dice error
    if rival is not None and weight and rival >= RIVAL_SAYS:
        return (f"another object in it scores almost as well as the one drawn ({rival:.0%} of its score), so it "
                f"may show the wrong one; estimated Dice error {estimate:.2f}")
    if standout_weight and plain >= STANDOUT_SAYS:
        return (f"it may show the wrong structure: what is drawn barely stands out from the tissue around it, though "
                f"LiteMedSAM rates its outline well, estimated Dice error {estimate:.2f}")
    return f"estimated Dice error {estimate:.2f}: it may have missed the object"
