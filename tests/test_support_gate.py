"""Support gating on image sets (core/support_gate.py): leave one out on the signed images, a support whose
foreground prototypes make the others worse is left out of the foreground; real images (the shipped MR
slices written in BUSI's layout, conftest.busi_layout) and the real lite0 encoder."""

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run
from napari_fewshot.core.matching import group_similarities, query_cells
from napari_fewshot.core.support_gate import (GateParams, LeaveOneOut, SupportGate, choose_gates, gate_support,
                                              gated_groups, grid_dice)
from napari_fewshot.evaluation.datasets import load_busi


@pytest.fixture(scope="module")
def mr_set(busi_layout):
    """The 8 MR slices (benign/) with their masks, features computed: (segmenter, masks)."""
    names, images, masks = load_busi(busi_layout)
    keep = [i for i, n in enumerate(names) if n.startswith("benign")]
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", refine=RefineParams(enabled=False)))
    segmenter.set_image([images[i] for i in keep])
    run(segmenter.compute_features(range(len(keep))))
    return segmenter, [masks[i].astype(np.uint8) for i in keep]


def misplaced(mask: np.ndarray) -> np.ndarray:
    """A block of a quarter of the image's side painted where the organ is not (the first corner free of
    it): a support that calls something else foreground, as a lesion that looks like tissue elsewhere does."""
    h, w = mask.shape[0] // 4, mask.shape[1] // 4
    for y, x in ((0, 0), (0, mask.shape[1] - w), (mask.shape[0] - h, 0), (mask.shape[0] - h, mask.shape[1] - w)):
        out = np.zeros_like(mask)
        out[y:y + h, x:x + w] = 1
        if not (out & mask).any():
            return out
    raise AssertionError("no corner free of the organ")


def support(masks, painted):
    return [masks[i] if i in painted else np.zeros_like(masks[i]) for i in range(len(masks))]


def test_grid_dice_per_class_and_empty():
    a = np.array([[0, 1], [1, 2]])
    assert grid_dice(a, a, 2) == 1.0
    assert grid_dice(np.zeros((2, 2)), a, 1) == 0.0
    assert grid_dice(np.zeros((2, 2)), np.zeros((2, 2)), 1) == 1.0  # absent from both


def test_no_gate_is_the_segmenters_own_groups(mr_set):
    segmenter, masks = mr_set
    support_set = segmenter.parse_support(support(masks, {0, 2, 4}))
    plain, same = segmenter._groups(support_set), gated_groups(segmenter, support_set, frozenset())
    query = [query_cells(segmenter.cache.get(1), torch.float32)]
    assert [g.key for g in plain] == [g.key for g in same]
    for a, b in zip(plain, same):
        torch.testing.assert_close(group_similarities(query, a)[0], group_similarities(query, b)[0])
    gated = gated_groups(segmenter, support_set, frozenset({2}))
    local = {g.key[2]: g for g in gated[1:]}
    assert local[2].key[-1] == "gated" and local[2].bounds[1] == local[2].bounds[-1]  # background only
    assert local[0].bounds[-1] > local[0].bounds[1]  # the others keep their foreground


def test_a_misplaced_support_is_gated_and_the_others_gain(mr_set):
    segmenter, masks = mr_set
    wrong = [m.copy() for m in masks]
    wrong[3] = misplaced(masks[3])
    support_set = segmenter.parse_support(support(wrong, {0, 1, 2, 3, 4}))
    pieces = {key[2]: p for key, p in segmenter._pieces(support_set).items()}
    loo = LeaveOneOut(pieces, segmenter.cache.get, support_set.targets, 1,
                      segmenter.params.max_local_for(segmenter.cache.stack))
    others = [0, 1, 2, 4]
    before = np.mean([loo.dice(i, frozenset()) for i in others])
    after = np.mean([loo.dice(i, frozenset({3})) for i in others])
    assert after > before + 0.05  # its prototypes hurt the good supports
    gated, steps = choose_gates(loo)
    assert 3 in gated and 3 == steps[1]["gated"]  # the most helpful gate comes first
    assert all(b["mean_dice"] > a["mean_dice"] for a, b in zip(steps, steps[1:]))
    assert len(gated) < 5  # the class keeps an ungated support


def test_too_few_supports_or_no_gain_gates_nothing(mr_set):
    segmenter, masks = mr_set
    wrong = [m.copy() for m in masks]
    wrong[1] = misplaced(masks[1])
    two = segmenter.parse_support(support(wrong, {0, 1}))
    assert gate_support(segmenter, two)[0] == frozenset()  # 2 < min_supports: nothing to validate on
    three = segmenter.parse_support(support(wrong, {0, 1, 2}))
    assert gate_support(segmenter, three, GateParams(min_gain=1.0))[0] == frozenset()


def test_installed_gate_segments_image_sets_and_records_it(mr_set):
    segmenter, masks = mr_set
    wrong = [m.copy() for m in masks]
    wrong[3] = misplaced(masks[3])
    painted = {0, 1, 2, 3, 4}
    plain = run(segmenter.segment(support(wrong, painted)))
    gate = SupportGate().install(segmenter)
    try:
        gated = run(segmenter.segment(support(wrong, painted)))
    finally:
        del segmenter._groups  # back to the class's method
    assert 3 in gate.history[-1]["gated"]
    score = lambda r: np.mean([grid_dice(np.asarray(r.labels[i]) != 0, masks[i] != 0, 1) for i in (5, 6, 7)])
    assert score(gated) > score(plain)
    for i in painted:  # the signed masks are kept as signed, the misplaced one too
        np.testing.assert_array_equal(np.asarray(gated.labels[i]), wrong[i])


def test_max_gates_bounds_the_greedy_and_the_first_gate_is_the_most_helpful(mr_set):
    segmenter, masks = mr_set
    wrong = [m.copy() for m in masks]
    wrong[1], wrong[3] = misplaced(masks[1]), misplaced(masks[3])
    support_set = segmenter.parse_support(support(wrong, {0, 1, 2, 3, 4}))
    pieces = {key[2]: p for key, p in segmenter._pieces(support_set).items()}
    loo = LeaveOneOut(pieces, segmenter.cache.get, support_set.targets, 1,
                      segmenter.params.max_local_for(segmenter.cache.stack))
    one, steps = choose_gates(loo, GateParams(max_gates=1))
    assert len(one) == 1 and one <= {1, 3}
    singles = {k: loo.mean_dice(frozenset({k})) for k in range(5)}
    assert steps[1]["mean_dice"] == pytest.approx(max(singles.values()))
