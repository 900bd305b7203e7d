"""Coarse first, refined as it arrives (core/refinement.py): segment(refine_later=True) + refine_result give the
one-call path's labels, in the order asked for, and re-decode only what changed."""

from dataclasses import replace

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run
from napari_fewshot.core.refinement import RefinedSlice, provisional_plane, refine_order
from napari_fewshot.errors import FewShotError


@pytest.fixture(scope="module")
def crop(chaos_case):
    """CHAOS case 1, 6 slices through liver and right kidney, both painted on the outer two."""
    volume, reference = chaos_case
    volume, reference = volume[16:22], reference[16:22]
    support = np.zeros(reference.shape, np.uint8)
    support[[0, 5]] = np.where(np.isin(reference[[0, 5]], (1, 2)), reference[[0, 5]], 0)
    return volume, reference, support


def segmenter(volume, refine=True):
    seg = FewShotSegmenter(SegmentationParams(refine=RefineParams(enabled=refine), input_size=256))
    seg.set_image(volume)
    return seg


@pytest.fixture(scope="module")
def one_call(crop):
    """One segmenter (LiteMedSAM loaded once) and its one-call refined result of the crop."""
    volume, _, support = crop
    seg = segmenter(volume)
    return seg, run(seg.segment(support))


@pytest.fixture
def decodes(monkeypatch):
    """The label planes core/refine.py decodes (not those it reuses because their coarse labels did not change)."""
    from napari_fewshot.core import refine

    seen, real = [], refine.apply_decoded  # where each decoded slice lands (Refiner._decode)
    monkeypatch.setattr(refine, "apply_decoded", lambda labels, *a: seen.append(labels.copy()) or real(labels, *a))
    return seen


def drain(stream):
    """(reports, returned value) of a generator."""
    reports = []
    while True:
        try:
            reports.append(next(stream))
        except StopIteration as stop:
            return reports, stop.value


def test_coarse_then_streamed_refinement_gives_the_one_call_labels(crop, one_call, decodes):
    volume, reference, support = crop
    seg, refined = one_call
    coarse = run(seg.segment(support, refine_later=True))
    assert coarse.refinement is not None and coarse.refinement.indices == [1, 2, 3, 4]
    shown = coarse.labels.copy()
    reports, final = drain(seg.refine_result(coarse, first=[3]))
    assert decodes == []  # the same coarse labels as the one-call path refined: every slice reused
    assert all(isinstance(r, RefinedSlice) for r in reports)
    assert [r.index for r in reports] == [3, 1, 4, 2]  # the visible slice, then outward from slices 0 and 5
    assert [r.done for r in reports] == [1, 2, 3, 4] and reports[-1].total == 4
    assert np.array_equal(final.labels, refined.labels)
    assert final.uncertainty == refined.uncertainty and final.refinement is None
    assert not np.array_equal(final.labels, coarse.labels)  # refinement did change something
    assert np.array_equal(coarse.labels, shown)  # the coarse result is left as it was
    for r in reports:  # what is shown meanwhile: the refined slice, less what the clean-up will remove
        assert r.plane.shape == reference.shape[1:] and r.plane.dtype == final.labels.dtype
        assert set(np.unique(r.plane)) <= {0, 1, 2}
    assert np.array_equal(final.labels[[0, 5]], support[[0, 5]])  # painted slices stay as painted
    seg.params = SegmentationParams(refine=RefineParams(enabled=False), input_size=256)
    try:
        plain = run(seg.segment(support))
    finally:
        seg.params = SegmentationParams(refine=RefineParams(enabled=True), input_size=256)
    assert np.array_equal(coarse.labels, plain.labels) and coarse.uncertainty == plain.uncertainty


def test_segment_with_prototypes_streams_too(crop, one_call, decodes):
    seg, _ = one_call
    prototypes = seg.prototypes(seg.parse_support(crop[2]))
    plan = [(prototypes, [1, 2]), (prototypes, [3, 4])]  # a plan is one segmentation, cleaned up as a whole
    one = run(seg.segment_with(plan))
    coarse = run(seg.segment_with(plan, refine_later=True))
    assert coarse.refinement.indices == [1, 2, 3, 4]
    before = len(decodes)
    final = run(seg.refine_result(coarse, first=[2]))
    assert len(decodes) == before  # every slice refined by the one-call path just before: reused
    assert np.array_equal(final.labels, one.labels) and final.uncertainty == one.uncertainty


def test_after_a_correction_only_changed_slices_are_decoded_and_the_rest_is_a_fresh_run_bit_for_bit(crop, one_call,
                                                                                                   decodes):
    """A correction re-decodes exactly the slices whose coarse labels (as refinement sees them) changed; with
    exact reuse only (RefineParams.reuse_changed = 0, reuse_shift = 0, reuse_pixels = 0) the refined labels, reused
    slices included, are those of a refiner that decodes every slice from scratch."""
    volume, reference, support = crop
    seg, _ = one_call
    params = seg.params
    seg.params = replace(params, refine=replace(params.refine, reuse_changed=0.0, reuse_shift=0.0, reuse_pixels=0.0))
    try:
        exact_reuse_is_a_fresh_run(seg, crop, decodes)
    finally:
        seg.params = params


def exact_reuse_is_a_fresh_run(seg, crop, decodes):
    volume, reference, support = crop
    run(seg.segment(support))  # every slice refined for the support before the correction
    before = {i: digest for i, (digest, _) in seg.refiner._refined.items()}
    corrected = support.copy()
    corrected[2] = np.where(np.isin(reference[2], (1, 2)), reference[2], 0)
    coarse = run(seg.segment(corrected, refine_later=True))
    assert coarse.refinement.indices == [1, 3, 4]
    decodes.clear()
    final = run(seg.refine_result(coarse, first=[3]))
    changed = [i for i in (1, 3, 4) if seg.refiner._refined[i][0] != before[i]]
    assert len(decodes) == len(changed)  # nothing else decoded (embeddings: the service's cache)
    memo, setting = seg.refiner._refined, seg.refiner._setting
    try:
        seg.refiner._refined, seg.refiner._setting = {}, None  # a refiner that has refined nothing yet
        fresh = run(seg.refine_result(coarse, first=[3]))
    finally:
        seg.refiner._refined, seg.refiner._setting = memo, setting
    assert len(decodes) > len(changed)  # the fresh refiner decoded the unchanged slices too
    assert np.array_equal(final.labels, fresh.labels) and final.uncertainty == fresh.uncertainty
    assert np.array_equal(final.labels[[0, 2, 5]], corrected[[0, 2, 5]])


def test_nothing_pending_without_refinement_or_for_another_image(crop, one_call):
    volume, _, support = crop
    seg, _ = one_call
    seg.params = SegmentationParams(refine=RefineParams(enabled=False), input_size=256)
    try:
        coarse = run(seg.segment(support, refine_later=True))
    finally:
        seg.params = SegmentationParams(refine=RefineParams(enabled=True), input_size=256)
    assert coarse.refinement is None and run(seg.refine_result(coarse)) is coarse
    coarse = run(seg.segment(support, refine_later=True))
    other = segmenter(volume[::-1].copy())  # no features needed: refused before any
    with pytest.raises(FewShotError, match="another image"):
        run(other.refine_result(coarse))


def test_refine_order_visible_first_then_outward_from_the_paint():
    assert refine_order([0, 1, 3, 4, 5, 6, 7, 8, 9], first=[7], painted=[2]) == [7, 1, 3, 0, 4, 5, 6, 8, 9]
    assert refine_order([0, 1, 3, 4], first=[2], painted=[]) == [1, 3, 0, 4]  # 2 is not to refine
    assert refine_order([5, 1, 3], painted=[0, 6]) == [1, 5, 3]
    assert refine_order([4, 2, 2]) == [2, 4]


def test_a_provisional_plane_keeps_only_what_the_clean_up_kept():
    cleaned = np.zeros((20, 20), np.uint8)
    cleaned[2:8, 2:8] = 1  # the clean-up kept this class-1 component, removed class 2 from the slice
    refined = cleaned.copy()
    refined[3:9, 3:9] = 1  # grown by refinement: kept
    refined[14:18, 14:18] = 1  # a class-1 component the clean-up did not keep: dropped
    refined[0:2, 15:19] = 2  # a class the clean-up removed from the slice: dropped
    out = provisional_plane(refined, cleaned, [1, 2])
    expected = np.zeros_like(refined)
    expected[2:8, 2:8] = expected[3:9, 3:9] = 1
    assert np.array_equal(out, expected) and out.dtype == refined.dtype


def test_the_cli_progress_line_draws_a_bar_per_stage_on_a_terminal_only():
    import io

    from napari_fewshot.core import Progress
    from napari_fewshot.pipeline import ProgressLine

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, piped = Terminal(), io.StringIO()
    for stream in (terminal, piped):
        line = ProgressLine(stream)
        for p in (Progress(1, 4, "features of slice 1"), Progress(4, 4, "features of slice 4"),
                  Progress(1, 2, "refined slice 3 of 9"), Progress(2, 2, "refined slice 5 of 9")):
            line(p)
    assert piped.getvalue() == ""
    lines = terminal.getvalue().split("\n")
    assert lines[0].endswith("4/4 features of slice 4".ljust(44)) and "[" + "#" * 30 + "]" in lines[0]
    assert lines[1].split("\r")[-1].startswith("[" + "#" * 30 + "] 2/2 refined slice 5 of 9") and lines[2] == ""


def test_another_order_and_other_decoder_batches_give_the_same_labels(crop, one_call, monkeypatch):
    """The window refines the visible (after a stroke: the corrected) slice's neighbours first (plugin/streaming.py
    `around`): another order, so other slices share a decoder call. LiteMedSAM's decoder gives each box the same
    probabilities whatever else is in the call, so the labels are the same bit for bit."""
    from napari_fewshot.core import refine

    volume, _, support = crop
    seg, _ = one_call
    monkeypatch.setattr(refine, "SLICES_PER_BATCH", 2)  # decoder calls of two slices: {1, 4}, {2, 3} / {2, 1}, {3, 4}
    coarse = run(seg.segment(support, refine_later=True))
    kept, out = seg._refiner, {}
    try:
        for first in ((), (2, 1, 3, 0, 4)):
            seg._refiner = type(kept)(seg.params, seg.sam)  # nothing to reuse: every box decoded (embeddings are kept)
            reports, final = drain(seg.refine_result(coarse, first=first))
            out[first] = ([r.index for r in reports], final.labels)
    finally:
        seg._refiner = kept
    assert out[()][0] == [1, 4, 2, 3] and out[(2, 1, 3, 0, 4)][0] == [2, 1, 3, 4]
    assert np.array_equal(out[()][1], out[(2, 1, 3, 0, 4)][1])
