"""The few-shot literature's volume protocols on folders of `image_*.nii.gz` + `label_*.nii.gz`.

within: per volume and class, K support slices evenly spread over the class's slice range
        (K=1: the middle slice; K=3: at 1/6, 1/2, 5/6); every other slice of the volume is scored,
        slices where the organ is absent included (3D Dice over those slices).
across: SSL-ALPNet's protocol: one support volume; the organ's slice range in support and query is
        split into 3 chunks; the middle slice of each support chunk segments the matching query
        chunk; Dice is scored inside the query organ's range. As a bank does, the query is finished
        with the priors of the support (core/bank_priors.py: where in the plane the organ was on the
        three middle slices; the chunk plan already says where along the body).
Each class is its own 1-way task (the other organs are background), as in those papers.
With `adapt`, the encoder is first adapted to each scan that is segmented ("Adapt to this scan",
core/adapt.py: superpixel episodes, no labels); fine-tuning, when asked too, starts from there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..core import AdaptParams, FewShotSegmenter, FineTuneParams, SegmentationParams, dice, run
from ..core.bank_priors import class_priors, support_levels, with_levels
from ..errors import FewShotError
from .adaptation import adapted_state, restore_weights
from .datasets import find_cases, load_case, present_classes, slice_range, spread_slices
from .interactive import evaluate_volumes_interactive


def chunk_bounds(lo: int, hi: int, n: int = 3) -> list[tuple[int, int]]:
    """Split [lo, hi] into n contiguous chunks (inclusive bounds), as SSL-ALPNet does."""
    edges = np.linspace(lo, hi + 1, n + 1)
    return [(int(round(edges[j])), int(round(edges[j + 1])) - 1) for j in range(n)]


def evaluate_volumes(
    folder: str | Path,
    protocol: str = "within",
    support_slices: int = 3,
    params: SegmentationParams | None = None,
    fine_tune: FineTuneParams | None = None,
    classes: dict[int, str] | None = None,
    support_case: str | None = None,
    adapt: AdaptParams | None = None,
    log: Callable[[str], None] = lambda _: None,
    rounds: int = 10,
    pick: str = "suggested",
) -> dict:
    """Run a protocol over a folder; returns the JSON-able report (dice_mean, dice_per_class, cases, seconds, config).
    protocol "interactive" (with `rounds` and `pick`) is evaluation/interactive.py."""
    if protocol == "interactive":
        return evaluate_volumes_interactive(folder, rounds, pick, support_slices, params, fine_tune, classes, adapt,
                                            log)
    params = params or SegmentationParams()
    started = time.perf_counter()
    cases = find_cases(folder)
    if protocol == "within":
        rows = _within(cases, support_slices, params, fine_tune, adapt, classes, log)
    elif protocol == "across":
        rows = _across(cases, params, fine_tune, adapt, classes, support_case, log)
    else:
        raise FewShotError(f"Unknown protocol {protocol!r}; use 'within', 'across' or 'interactive'.")
    names = sorted({r["class"] for r in rows}, key=lambda n: min(r["class_id"] for r in rows if r["class"] == n))
    per_class = {n: float(np.mean([r["dice"] for r in rows if r["class"] == n])) for n in names}
    return {
        "dice_mean": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "dice_per_class": per_class,
        "cases": rows,
        "seconds": round(time.perf_counter() - started, 2),
        "config": {"protocol": protocol, "support_slices": support_slices if protocol == "within" else 1,
                   "params": params.to_dict(), "fine_tune": None if fine_tune is None else fine_tune.__dict__,
                   "adapt": None if adapt is None else adapt.__dict__, "folder": str(folder)},
    }


def _segment_one_way(segmenter, support, fine_tune, state=None):
    """Segment the current image from a binary support; fine-tune first (then undo, back to `state`) when asked."""
    if fine_tune is not None and fine_tune.steps > 0:
        run(segmenter.fine_tune(support, fine_tune))
    result = run(segmenter.segment(support))
    if fine_tune is not None and fine_tune.steps > 0:
        restore_weights(segmenter, state)
    return result.labels


def _within(cases, k, params, fine_tune, adapt, classes, log):
    rows = []
    for case, image_path, label_path in cases:
        image, labels = load_case(image_path, label_path)
        segmenter = FewShotSegmenter(params)
        segmenter.set_image(image)
        state = adapted_state(segmenter, adapt, log)
        for class_id, name in present_classes(labels, classes).items():
            lo, hi = slice_range(labels, class_id)
            picks = spread_slices(lo, hi, k)
            support = np.zeros(labels.shape, np.uint8)
            support[picks] = labels[picks] == class_id
            predicted = _segment_one_way(segmenter, support, fine_tune, state)
            scored = np.setdiff1d(np.arange(len(labels)), picks)
            score = dice(predicted[scored] == 1, labels[scored] == class_id)
            rows.append({"case": case, "class": name, "class_id": class_id, "support_slices": picks, "dice": score})
            log(f"case {case} {name}: support slices {picks}, Dice {score:.3f}")
    return rows


def _chunk_prototypes(segmenter, s_labels, middles):
    """class id -> [prototypes of the middle slice of each support chunk] (segmenter holds the support scan)."""
    out: dict[int, list] = {}
    for class_id, slices in middles.items():
        out[class_id] = []
        for middle in slices:
            support = np.zeros(s_labels.shape, np.uint8)
            support[middle] = s_labels[middle] == class_id
            out[class_id].append(segmenter.prototypes(segmenter.parse_support(support)))
    return out


def _support_priors(source, s_labels, class_id, slices):
    """A 1-way task's (label 1) priors from its support slices, as a bank keeps them (core/bank_priors.py):
    where it was, and its level on its support with the prototypes of all of them (each slice held out)."""
    support = np.zeros(s_labels.shape, np.uint8)
    support[slices] = s_labels[slices] == class_id
    support_set = source.parse_support(support)
    targets = {m: support_set.targets[m] for m in support_set.slice_indices}
    levels = support_levels(source.slice_features(list(targets)), list(targets.values()), list(targets),
                            source.prototypes(support_set))
    return with_levels(class_priors(source.cache.stack, targets, [1]), levels)


def _across(cases, params, fine_tune, adapt, classes, support_case, log):
    by_id = {c[0]: c for c in cases}
    support_id = support_case or cases[0][0]
    if support_id not in by_id:
        raise FewShotError(f"Support case {support_id!r} is not among the cases {list(by_id)}.")
    if len(cases) < 2:
        raise FewShotError("The across protocol needs at least two volumes.")
    s_image, s_labels = load_case(*by_id[support_id][1:])
    source = FewShotSegmenter(params)  # holds the support scan
    source.set_image(s_image)
    names = present_classes(s_labels, classes)
    middles = {c: [(lo + hi) // 2 for lo, hi in chunk_bounds(*slice_range(s_labels, c))] for c in names}
    tuned = None
    if fine_tune is not None and fine_tune.steps > 0:
        # A clinician painting a slice paints every organ on it: fine-tune on all chosen slices at once.
        chosen = sorted({m for ms in middles.values() for m in ms})
        support = np.zeros(s_labels.shape, s_labels.dtype)
        support[chosen] = np.where(np.isin(s_labels[chosen], list(names)), s_labels[chosen], 0)
        run(source.fine_tune(support, fine_tune))
        tuned = {k: v.detach().clone() for k, v in source.encoder.state_dict().items()}
    chunk_prototypes = _chunk_prototypes(source, s_labels, middles)
    priors = {c: _support_priors(source, s_labels, c, ms) for c, ms in middles.items()}
    segmenter = FewShotSegmenter(params, encoder=source.encoder)  # the query scan; shares the encoder
    rows = []
    for case, image_path, label_path in cases:
        if case == support_id:
            continue
        image, labels = load_case(image_path, label_path)
        segmenter.set_image(image)
        if adapt is not None and adapt.steps > 0:
            # Adapted to the query scan: the support's prototypes are pooled again with the new weights.
            adapted_state(segmenter, adapt, log)
            source.forget_features()
            chunk_prototypes = _chunk_prototypes(source, s_labels, middles)
        for class_id, name in names.items():
            span = slice_range(labels, class_id)
            if span is None:
                continue
            # One plan, each chunk with its own prototypes, finished as the shipped bank path finishes
            # (FewShotSegmenter.segment_with: no paint on this scan, so the largest 3D component per class).
            plan = [(prototypes, range(c_lo, c_hi + 1))
                    for (c_lo, c_hi), prototypes in zip(chunk_bounds(*span), chunk_prototypes[class_id])]
            predicted = run(segmenter.segment_with(plan, priors=priors[class_id])).labels == 1
            inside = slice(span[0], span[1] + 1)
            score = dice(predicted[inside], labels[inside] == class_id)
            rows.append({"case": case, "support_case": support_id, "class": name, "class_id": class_id, "dice": score})
            log(f"query {case} <- support {support_id} {name}: Dice {score:.3f}")
        if adapt is not None and adapt.steps > 0:
            restore_weights(segmenter, tuned)
    source.reset_weights()
    return rows
