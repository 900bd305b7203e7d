"""Check next on an image set LiteMedSAM drew, at less decoder cost (issue 20: the stability sign's 7 boxes were
~0.6 CPU-s per image; BENCHMARKS.md, session 16 "cost"): by default (CHECK_NEXT "estimate") an image ranks by
1 - LiteMedSAM's IoU estimate of its prediction's box, one box decoded; with "selection" (off: it lost held-out
seed 0) by the estimate propose and select read when it decoded the kept object, no box."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_fewshot.core import run
from napari_fewshot.core import uncertainty
from napari_fewshot.core.select_objects import select_plane
from napari_fewshot.core.uncertainty import rank_slices, refiner_decoder, remember_selection

from test_select_objects import _Prompter, _blob_around_lesion, _embedding, _inscribed, three_images


def test_by_default_check_next_decodes_one_box_per_image_and_ranks_by_litemedsams_estimate(monkeypatch):
    """Through FewShotSegmenter (LiteMedSAM's stand-in rates every low-resolution mask 0.8): each unpainted image
    ranks 1 - 0.8 from its own box alone (main decoded 1 + JITTERED_BOXES boxes per image)."""
    class Rated(_Prompter):
        def decode_batch(self, requests, max_prompts=32, low_res=False):
            return [(self.decode(e, b, m, low_res), np.full(len(b), 0.8 if low_res else 0.3, np.float32))
                    for e, b, m in requests]

    moved = []
    plain = uncertainty.box_signs
    monkeypatch.setattr(uncertainty, "box_signs", lambda *a, **k: moved.append(k.get("jittered")) or plain(*a, **k))
    segmenter, support, _ = three_images(Rated)
    result = run(segmenter.segment(support))
    assert all(np.any(result.labels[i]) for i in (1, 2))
    assert moved == [0, 0]  # the prediction's own box, no moved boxes
    assert result.uncertainty == {1: pytest.approx(0.2), 2: pytest.approx(0.2)}


def test_check_next_ranks_a_selected_image_by_the_winners_estimate_and_decodes_no_box(monkeypatch):
    """Through FewShotSegmenter (LiteMedSAM's stand-in rates every low-resolution mask 0.8, every full-size one
    0.3): both unpainted images rank 1 - 0.8, and the stability sign's boxes are never decoded (main decoded
    1 + JITTERED_BOXES boxes per image)."""
    class Rated(_Prompter):
        def decode_batch(self, requests, max_prompts=32, low_res=False):
            return [(self.decode(e, b, m, low_res), np.full(len(b), 0.8 if low_res else 0.3, np.float32))
                    for e, b, m in requests]

    monkeypatch.setattr(uncertainty, "CHECK_NEXT", "selection")
    asked = []
    plain = uncertainty.box_signs
    monkeypatch.setattr(uncertainty, "box_signs", lambda *a, **k: asked.append(1) or plain(*a, **k))
    segmenter, support, _ = three_images(Rated)
    result = run(segmenter.segment(support))
    assert all(np.any(result.labels[i]) for i in (1, 2))
    assert asked == []
    assert result.uncertainty == {1: pytest.approx(0.2), 2: pytest.approx(0.2)}


def _fake_refiner(decoded):
    """A refiner whose LiteMedSAM service records what Check next decodes (masks: the box's inner half)."""
    def decode_with_quality(requests, low_res=False):
        decoded.append(sum(len(b) for _, b, _ in requests))
        out = []
        for _, boxes, _ in requests:
            masks = np.zeros((len(boxes), 64, 64), np.float32)
            for n, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int)):
                masks[n, y0:y1, x0:x1] = 1
            out.append((masks, np.full(len(boxes), 0.6, np.float32)))
        return out

    service = SimpleNamespace(decoder_version=0, embedding_of=lambda stack, i: None,
                              decode_with_quality=decode_with_quality)
    return SimpleNamespace(service=service, stability_memo=(None, {}))


def test_the_rating_is_kept_for_the_labels_the_finishing_step_leaves_and_only_for_them(monkeypatch):
    """Selection's labels may hold a second, smaller piece the finishing step removes: the rating is found for the
    cleaned labels; labels changed since (a stroke), or a class that has no rating, decode their own box ("estimate",
    the same scale: 1 - LiteMedSAM's IoU estimate)."""
    monkeypatch.setattr(uncertainty, "CHECK_NEXT", "selection")
    stack = SimpleNamespace(signature=lambda: "set")
    decoded = []
    refiner = _fake_refiner(decoded)
    selected = np.zeros((64, 64), np.uint8)
    selected[10:30, 10:30] = 1
    selected[50:54, 50:54] = 1  # a stray piece, removed by keep_largest_per_image
    cleaned = selected.copy()
    cleaned[50:54, 50:54] = 0
    scores = np.zeros((2, 8, 8), np.float32)
    remember_selection(refiner, stack, 1, selected, [1], {1: 0.9})
    decode = refiner_decoder(refiner, stack)
    assert rank_slices({1: scores}, [cleaned, cleaned], False, 20.0, [0], decode=decode) == {1: pytest.approx(0.1)}
    assert decoded == []
    moved = np.roll(cleaned, 3, axis=1)  # other labels: the prediction's own box is decoded
    assert rank_slices({1: scores}, [cleaned, moved], False, 20.0, [0], decode=decode) == {1: pytest.approx(0.4)}
    assert decoded == [1]
    two = cleaned.copy()
    two[40:60, 40:60] = 2  # a second class without a rating: nothing is kept for the image
    remember_selection(refiner, stack, 2, two, [1, 2], {1: 0.9})
    rank_slices({2: scores}, [cleaned, cleaned, two], False, 20.0, [0], decode=refiner_decoder(refiner, stack))
    assert decoded == [1, 1]
    remember_selection(refiner, stack, 2, two, [1, 2], {1: 0.9, 2: 0.7})  # the lowest rating counts
    assert rank_slices({2: scores}, [cleaned, cleaned, two], False, 20.0, [0],
                       decode=refiner_decoder(refiner, stack)) == {2: pytest.approx(0.3)}
    assert len(decoded) == 2


def test_select_plane_reports_the_winners_estimate_unless_it_is_drawn_again():
    shape = (128, 128)
    lesion, scores, labels, profiles = _blob_around_lesion(shape)
    inscribed = _inscribed(shape)

    def rated(boxes, low_res=False):  # the estimate: the box's width / 1000, so each candidate's is its own
        masks = inscribed(boxes, low_res)
        return (masks, np.asarray(boxes)[:, 2] - np.asarray(boxes)[:, 0]) if low_res else masks

    estimates = {}
    out = select_plane(labels, scores, [1], lambda b, low: rated(b, low), _embedding(shape, lesion), profiles,
                       estimates=estimates)
    rows, cols = np.nonzero(out == 1)
    assert set(estimates) == {1} and 0 < estimates[1]
    assert abs(estimates[1] - (cols.max() - cols.min())) < 0.35 * estimates[1]  # the winner's box, about its disk
    again = {}
    select_plane(labels, scores, [1], lambda b, low: rated(b, low), _embedding(shape, lesion), profiles,
                 redraw=True, estimates=again)
    assert again == {}  # redrawn at full size (a tuned decoder): its estimate is not the outline's


def test_the_estimate_rule_decodes_the_predictions_own_box_only(monkeypatch):
    """CHECK_NEXT = "estimate": one box per image (the prediction's box + 10 %), ranked 1 - LiteMedSAM's estimate;
    "signs" decodes 1 + JITTERED_BOXES and combines the signs."""
    stack = SimpleNamespace(signature=lambda: "set")
    decoded = []
    refiner = _fake_refiner(decoded)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 12:40] = 1
    scores = np.zeros((2, 8, 8), np.float32)
    monkeypatch.setattr(uncertainty, "CHECK_NEXT", "estimate")
    ranked = rank_slices({1: scores}, [labels, labels], False, 20.0, [0], decode=refiner_decoder(refiner, stack))
    assert decoded == [1] and ranked == {1: pytest.approx(0.4)}
    monkeypatch.setattr(uncertainty, "CHECK_NEXT", "signs")
    signs = rank_slices({1: scores}, [labels, labels], False, 20.0, [0], decode=refiner_decoder(refiner, stack))
    assert decoded == [1, 1 + uncertainty.JITTERED_BOXES] and signs[1] != ranked[1]
