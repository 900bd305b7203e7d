"""LiteMedSAM's embeddings ahead of need (core/ahead.py): after a volume's refinement, the slices just beyond each
class's first and last slice are embedded in idle time, nearest first, so a correction that extends an organ onto
them computes no embedding; painted slices, slices embedded already and anything past the memory budget are not."""

from types import SimpleNamespace

import numpy as np
from test_refine import CountingPrompter

from napari_fewshot.core import RefineParams, SegmentationParams
from napari_fewshot.core.ahead import ahead_slices, embed_ahead
from napari_fewshot.core.refine import Refiner
from napari_fewshot.core.sam_service import EMBEDDING_BYTES, LiteMedSAMService
from napari_fewshot.core.stack import ImageStack


def labels_with(spans: dict[int, tuple[int, int]], slices: int = 30) -> np.ndarray:
    """(slices, 16, 16) labels: class c on slices first..last of spans[c] (a 10 x 10 square)."""
    out = np.zeros((slices, 16, 16), np.uint8)
    for c, (first, last) in spans.items():
        out[first:last + 1, 3:13, 3:13] = c
    return out


def test_ahead_slices_are_those_beyond_each_class_nearest_first():
    labels = labels_with({1: (10, 14), 2: (13, 20)})
    order = ahead_slices(labels, [1, 2], skip=[9], reach=3)
    assert order == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 8, 22, 7, 23]  # in a span, then 1, 2, 3 beyond
    assert ahead_slices(labels, [1, 2], skip=[], reach=0) == []
    assert ahead_slices(labels_with({1: (0, 2)}), [1], skip=[], reach=2) == [0, 1, 2, 3, 4]  # clipped at the ends
    assert ahead_slices(labels, [3], skip=[], reach=5) == []  # a class not predicted


def fake_segmenter(volume, ahead=3, budget=1 << 30, enabled=True):
    """What embed_ahead reads of a FewShotSegmenter, on a counting LiteMedSAM stand-in."""
    params = SegmentationParams(refine=RefineParams(enabled=enabled, ahead=ahead))
    refiner = Refiner(params, LiteMedSAMService("cpu", budget, prompter_factory=CountingPrompter))
    stack = ImageStack(volume)
    return SimpleNamespace(params=params, refiner=refiner, device="cpu",
                           _require_image=lambda: SimpleNamespace(stack=stack)), stack


def result_of(labels, support=()):
    return SimpleNamespace(labels=labels, class_ids=[1, 2], segmented_slices=list(range(len(labels))),
                           support_slices=list(support), refinement=None)


def test_a_correction_that_extends_an_organ_computes_no_embedding_after_embedding_ahead():
    volume = np.random.default_rng(0).random((30, 16, 16)).astype(np.float32)
    seg, stack = fake_segmenter(volume, ahead=3)
    service = seg.refiner.service
    labels = labels_with({1: (10, 14)})
    list(seg.refiner.refine(stack, list(labels.copy()), range(30), [1, 2]))  # the refinement: slices 10-14
    assert service.computed == 5
    reports = list(embed_ahead(seg, result_of(labels, support=[12])))
    assert [r.done for r in reports] == [1, 2, 3, 4, 5, 6] and "ahead" in reports[-1].message
    assert service.computed == 11  # 9, 15, 8, 16, 7, 17
    assert list(embed_ahead(seg, result_of(labels, support=[12]))) == []  # all there: nothing again
    corrected = labels_with({1: (7, 17)})  # a correction extends the organ by 3 slices on both sides
    list(seg.refiner.refine(stack, list(corrected.copy()), range(30), [1, 2]))
    assert service.computed == 11  # no embedding waited for


def test_nothing_ahead_when_off_for_2d_or_past_the_memory_budget():
    volume = np.random.default_rng(1).random((30, 16, 16)).astype(np.float32)
    labels = labels_with({1: (10, 14)})
    for seg, _ in (fake_segmenter(volume, ahead=0), fake_segmenter(volume, enabled=False)):
        assert list(embed_ahead(seg, result_of(labels))) == [] and seg.refiner.service.computed == 0
    seg, _ = fake_segmenter(volume, ahead=10, budget=8 * EMBEDDING_BYTES)  # room for 8 embeddings
    assert len(list(embed_ahead(seg, result_of(labels)))) == 3  # 8 less the 5 slices the refinement needs
    assert seg.refiner.service.computed == 3
    image, _ = fake_segmenter(volume[:1], ahead=3)  # one slice: no volume
    assert list(embed_ahead(image, result_of(labels[:1]))) == []


def test_embedding_ahead_does_not_reset_what_the_refiner_reuses():
    assert RefineParams(ahead=0) != RefineParams(ahead=20)
    volume = np.random.default_rng(2).random((12, 16, 16)).astype(np.float32)
    seg, stack = fake_segmenter(volume, ahead=3)
    labels = labels_with({1: (3, 6)}, slices=12)
    list(seg.refiner.refine(stack, list(labels.copy()), range(12), [1, 2]))
    calls = seg.refiner.service.prompter.calls
    seg.refiner.params = SegmentationParams(refine=RefineParams(enabled=True, ahead=7))
    list(seg.refiner.refine(stack, list(labels.copy()), range(12), [1, 2]))
    assert seg.refiner.service.prompter.calls == calls  # the same coarse labels: every slice reused
