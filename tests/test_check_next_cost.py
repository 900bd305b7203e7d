"""Check next on an image set LiteMedSAM drew, at less decoder cost (issue 20: the stability sign's 7 boxes were
~0.6 CPU-s per image; BENCHMARKS.md, session 16 "cost"): by default (CHECK_NEXT "estimate") an image ranks by
1 - LiteMedSAM's IoU estimate of its prediction's box, one box decoded; "signs" decodes the moved boxes too.
("selection", the estimate propose and select read when it decoded the kept object, lost held-out seed 0 and was
removed in session 17 with its tests.)"""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_fewshot.core import run
from napari_fewshot.core import uncertainty
from napari_fewshot.core.uncertainty import rank_slices, refiner_decoder

from test_select_objects import _Prompter, three_images


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


class Decoded(list):
    """Boxes per decode call; .inside: whether each call asked for its boxes' cells only."""


def _fake_refiner(decoded):
    """A refiner whose LiteMedSAM service records what Check next decodes (masks: the box's inner half)."""
    def decode_with_quality(requests, low_res=False, inside=False):
        decoded.append(sum(len(b) for _, b, _ in requests))
        decoded.inside = getattr(decoded, "inside", []) + [inside]
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


def test_the_estimate_rule_decodes_the_predictions_own_box_only(monkeypatch):
    """CHECK_NEXT = "estimate": one box per image (the prediction's box + 10 %), ranked 1 - LiteMedSAM's estimate;
    "signs" decodes 1 + JITTERED_BOXES and combines the signs."""
    stack = SimpleNamespace(signature=lambda: "set")
    decoded = Decoded()
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
    # one box: only its estimate is read, so its cells alone are upscaled; seven boxes' masks are compared: no window
    assert decoded.inside == [True, False]
