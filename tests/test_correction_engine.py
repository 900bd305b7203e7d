"""The engine under the correction loop: incremental re-segmentation, exact fast labelling, the
"check next" ranking, and Reset weights without recomputing features (real CHAOS MR case)."""

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, FineTuneParams, SegmentationParams, dice, run
from napari_fewshot.core.matching import MatchCache, PrototypeGroup, group_similarity, matmul_dtype, query_cells
from napari_fewshot.core.predict import class_similarity, labels_from_scores, upsample
from napari_fewshot.core.prototypes import build_prototypes
from napari_fewshot.core.slice_reach import nearest_slices
from napari_fewshot.evaluation.datasets import slice_range


@pytest.fixture(scope="module")
def segmenter(chaos_case):
    seg = FewShotSegmenter(SegmentationParams(device="cpu"))
    seg.set_image(chaos_case[0])
    run(seg.compute_features())
    return seg


def one_slice_support(labels, class_id=1):
    lo, hi = slice_range(labels, class_id)
    support = np.zeros(labels.shape, np.uint8)
    middle = (lo + hi) // 2
    support[middle] = labels[middle] == class_id
    return support, middle


def test_labels_from_scores_equals_argmax_of_the_full_upsampling():
    generator = torch.Generator().manual_seed(0)
    for classes, (h, w), size in ((2, (48, 48), (512, 512)), (5, (40, 48), (318, 384)), (3, (13, 17), (101, 122))):
        scores = torch.randn(classes, h, w, generator=generator) * 0.1
        scores = torch.nn.functional.avg_pool2d(scores[None], 3, 1, 1)[0]  # smooth, like real score maps
        fast, _ = labels_from_scores(scores, size)
        full = upsample(scores[None], size)[0].argmax(0).numpy()
        np.testing.assert_array_equal(fast, full)
    uniform = torch.stack([torch.full((6, 6), 0.9), torch.full((6, 6), 0.2)])
    assert not labels_from_scores(uniform, (64, 64))[0].any()


def test_grouped_matching_equals_matching_the_combined_prototypes():
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(32, 12, 12, generator=generator) for _ in range(3)]
    targets = [(torch.rand(96, 96, generator=generator) > 0.7).long() for _ in range(2)]
    combined = build_prototypes(features[:2], targets, [1], mode="local")
    expected = class_similarity(features[2][None], combined)[0]
    groups = [PrototypeGroup.make(("all",), combined.vectors, combined.owner, 1)]
    got = MatchCache().class_similarity("query", lambda: features[2], groups)
    # bfloat16 products (centred) on CPUs that have them; int8 (core/precision.py) on random 32-d cells: 5.5e-3
    assert torch.allclose(got, expected, atol=1e-2 if matmul_dtype("cpu") == torch.int8 else 5e-3)
    assert (got.argmax(0) == expected.argmax(0)).float().mean() > 0.99
    query = query_cells(features[2], torch.float32)
    exact = group_similarity(query, groups[0]).reshape(2, 12, 12)
    assert torch.allclose(exact, expected, atol=1e-5)


def test_correction_rematches_only_the_corrected_slice_and_equals_a_fresh_segmentation(segmenter, chaos_case):
    _, labels = chaos_case
    support, middle = one_slice_support(labels)
    run(segmenter.segment(support))
    lo, hi = slice_range(labels, 1)
    corrected = (lo + middle) // 2
    support[corrected] = labels[corrected] == 1
    before = segmenter._matches.misses
    again = run(segmenter.segment(support))
    # one new group, matched once on each predicted slice it is next to (core/slice_reach.py): every slice below the
    # painted middle one but itself; with support_reach "all", every predicted slice
    reached = [z for z in range(len(labels)) if z not in (corrected, middle)
               and corrected in nearest_slices({corrected: {0, 1}, middle: {0, 1}}, z)]
    assert reached == [z for z in range(middle) if z != corrected]
    assert segmenter._matches.misses - before == len(reached)

    fresh = FewShotSegmenter(SegmentationParams(device="cpu"), encoder=segmenter.encoder)
    fresh.set_image(chaos_case[0])
    np.testing.assert_array_equal(run(fresh.segment(support)).labels, again.labels)
    np.testing.assert_array_equal(again.labels[corrected], support[corrected])  # a corrected slice stays as painted

    every = FewShotSegmenter(SegmentationParams(device="cpu", support_reach="all"), encoder=segmenter.encoder)
    every.set_image(chaos_case[0])
    support[corrected] = 0
    run(every.segment(support))
    support[corrected] = labels[corrected] == 1
    before = every._matches.misses
    run(every.segment(support))
    assert every._matches.misses - before == len(labels) - 2  # every slice but the two support slices


def test_check_order_ranks_the_wrong_slices_first(segmenter, chaos_case):
    _, labels = chaos_case
    support, middle = one_slice_support(labels)
    result = run(segmenter.segment(support))
    order = result.check_order()
    assert middle not in order and sorted(order) == sorted(set(range(len(labels))) - {middle})
    assert all(result.uncertainty[a] >= result.uncertainty[b] for a, b in zip(order, order[1:]))
    assert result.check_order(exclude=order[:3]) == order[3:]
    errors = {z: int(((result.labels[z] == 1) != (labels[z] == 1)).sum()) for z in order}
    top = order[: len(order) // 4]
    bottom = order[-len(order) // 4:]
    print("mean wrong pixels, most unsure quarter vs most sure quarter:",
          np.mean([errors[z] for z in top]), np.mean([errors[z] for z in bottom]))
    assert np.mean([errors[z] for z in top]) > np.mean([errors[z] for z in bottom])


def test_reset_weights_brings_back_the_original_features_without_the_encoder(chaos_case):
    image, labels = chaos_case
    seg = FewShotSegmenter(SegmentationParams(device="cpu", input_size=128))
    seg.set_image(image)
    run(seg.compute_features())
    original = {i: seg.cache.get(i).clone() for i in (0, len(image) // 2)}
    support, _ = one_slice_support(labels)
    first = run(seg.segment(support)).labels
    run(seg.fine_tune(support, FineTuneParams(method="encoder", steps=1)))
    assert len(seg.cache) < len(image)  # fine-tuned weights need new features
    calls = []
    seg.encoder.register_forward_hook(lambda *_: calls.append(1))
    seg.reset_weights()
    assert len(seg.cache) == len(image) and not seg.is_fine_tuned
    again = run(seg.segment(support)).labels
    assert calls == []
    for i, tensor in original.items():
        assert torch.equal(seg.cache.get(i), tensor)
    np.testing.assert_array_equal(again, first)
    assert dice(again == 1, labels == 1) > 0.5


def test_a_slice_checked_empty_is_background_support(segmenter, chaos_case):
    _, labels = chaos_case
    support, middle = one_slice_support(labels)
    result = run(segmenter.segment(support))
    absent = [z for z in range(len(labels)) if not (labels[z] == 1).any()]
    wrong = max(absent, key=lambda z: (result.labels[z] == 1).sum())
    corrected = run(segmenter.segment(support, empty_slices=[wrong]))
    assert wrong in corrected.support_slices and wrong not in corrected.uncertainty
    assert not corrected.labels[wrong].any()
    np.testing.assert_array_equal(corrected.labels[middle], support[middle])
    painted_anyway = run(segmenter.segment(support, empty_slices=[middle]))  # paint wins over "empty"
    np.testing.assert_array_equal(painted_anyway.labels[middle], support[middle])
    with pytest.raises(Exception, match="outside"):
        run(segmenter.segment(support, empty_slices=[len(labels)]))
