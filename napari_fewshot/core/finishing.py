"""The one finishing step of a segmentation (FewShotSegmenter.segment and segment_with): the 3D clean-up
of a volume (anchored on the paint, or for a prototype bank on each class's largest component after its
priors, core/bank_priors.py), the largest object per 2D image, then Check next's ranking (core/uncertainty.py).

When LiteMedSAM refines a volume, this one clean-up runs twice: on the coarse labels (`cleaned_labels`, what the
refiner is handed, for paint and for a bank alike), then on the refined labels with `refined=True`. The coarse
pass decides which objects there are (the beyond-support limit, the 3D components, a bank's priors with their
plane boost); the refined pass keeps the 3D components and a bank's filter but no longer clips each slice to
its neighbour nearer the paint: that limit (grow 0, shrink-only) was chosen on coarse labels, and on redrawn
ones it cut off organs that widen away from the paint (BENCHMARKS.md, issue 21, session 11)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .result import SegmentationResult
from .support import SupportSet


def finish_result(segmenter, result: SegmentationResult, coarse: dict[int, np.ndarray], whole: bool,
                  support_set: SupportSet | None = None, priors=None, rank: bool = True, refined: bool = False) -> None:
    """The finishing step of `segmenter` (a FewShotSegmenter) `segment` and `segment_with`, in place: clean-up,
    then the ranking.

    whole: every slice of the result's segmentation was asked for (a slice subset of a volume gets no
    3D clean-up: the unsegmented slices would cut organs off from their anchor). support_set: the
    paint anchoring the 3D clean-up; None (a prototype set) anchors each class on its largest 3D
    component. Slices copied from the paint (result.support_slices) stay exactly as painted, and an
    image the user painted on is never pruned: in scribble mode, the objects they left unpainted on
    it are exactly what they asked the model to find. rank=False: the clean-up only. refined: result.labels
    are LiteMedSAM's redrawing of labels this clean-up already cleaned: no plane boost of a bank's priors (the
    scores are the coarse step's) and no beyond-support limit (the coarse pass applied it).
    """
    stack = segmenter._require_image().stack
    volume = stack.is_3d
    copied = list(result.support_slices)
    if segmenter.params.postprocess and volume and whole:
        from .postprocess import postprocess_volume, support_hints

        painted, seeds = {}, {}
        if support_set is not None:
            painted, seeds = support_hints(support_set.targets, support_set.class_ids, result.labels.shape)
        labels = result.labels
        if priors and support_set is None:  # a bank's priors: where its classes were (core/bank_priors.py)
            from .bank_priors import apply_priors

            labels = apply_priors(labels, result.class_ids, priors, stack, result.segmented_slices,
                                  None if refined else coarse)
        cleaned = postprocess_volume(labels, result.class_ids, painted, seeds, segmenter.params.postprocess_grow,
                                     limit=not refined, detach=segmenter.params.postprocess_detach)
        keep = np.ones(len(cleaned), bool)
        keep[copied] = False
        result.labels[keep] = cleaned[keep]
    elif segmenter.params.postprocess and not volume:
        from .postprocess import keep_largest_per_image

        painted = set(support_set.slice_indices) if support_set is not None else set()
        predicted = [i for i in result.segmented_slices if i not in painted]
        keep_largest_per_image(result.labels, result.class_ids, predicted)
    if rank:
        rank_result(segmenter, result, coarse, copied)


def cleaned_labels(result: SegmentationResult, finish) -> np.ndarray:
    """(S, H, W): what the clean-up of `finish` (finish_result with its arguments bound) would leave of the
    coarse result.labels, on a copy: result is not changed and nothing is ranked. What LiteMedSAM refines of a
    volume, painted or segmented with a bank: refining the raw labels redrew false positives and the parts the
    limit removed too, whose boxes then won or split the kept component (CHAOS across, BENCHMARKS.md "chaos")."""
    probe = dataclasses.replace(result, labels=result.labels.copy(), uncertainty={})
    finish(probe, rank=False)
    return probe.labels

def rank_result(segmenter, result: SegmentationResult, coarse: dict[int, np.ndarray], skip: Sequence[int] = ()) -> None:
    """Fill result.uncertainty for its predicted slices (not `skip`), from the final labels."""
    from .ambiguity import selection_ambiguity
    from .standout import image_standout, standout_sign
    from .uncertainty import AMBIGUITY_WEIGHT, STANDOUT_WEIGHT, rank_slices, refiner_decoder

    skip = set(skip)
    wanted = {i: m for i, m in coarse.items() if i not in skip}
    stack = segmenter._require_image().stack  # an image set refined by LiteMedSAM: its stability ranks too
    redraw = not stack.is_volume and segmenter.params.refine.enabled_for(stack, segmenter.device)
    decode = refiner_decoder(segmenter.refiner, stack) if redraw else None
    rivals = None  # images the selection drew: how close another object scored (core/ambiguity.py)
    if redraw and AMBIGUITY_WEIGHT:
        rivals = result.ambiguity = selection_ambiguity(getattr(segmenter, "_selected", {}), wanted)
    plain = None  # images LiteMedSAM drew: how little the drawn object stands out from its ring (core/standout.py)
    if redraw and STANDOUT_WEIGHT:
        service = segmenter.refiner.service
        memo = getattr(decode, "memo", None)  # the refiner's, per image set and decoder (uncertainty.refiner_decoder)
        result.standout = {i: image_standout(service, stack, result.labels[i], i, result.class_ids, memo)
                           for i in wanted}
        plain = {i: standout_sign(contrast) for i, contrast in result.standout.items()}
    result.uncertainty = rank_slices(wanted, result.labels, stack.is_volume, segmenter.params.scale,
                                     support=sorted(skip), decode=decode, settle=getattr(coarse, "settle", None),
                                     ambiguity=rivals, standout=plain)

