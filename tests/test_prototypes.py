"""The PANet maths against hand computation on toy tensors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_fewshot.core.finetune import _episode_loss
from napari_fewshot.core.config import SegmentationParams
from napari_fewshot.core.predict import class_similarity, probabilities, segment, self_supported_similarity
from napari_fewshot.core.prototypes import (
    PrototypeSet, build_prototypes, class_weights, local_prototypes, masked_average_pooling, upsample_adjoint,
)
from napari_fewshot.core.support import IGNORE, parse_support
from napari_fewshot.errors import FewShotError


def test_upsample_adjoint_is_the_transpose_of_bilinear_upsampling():
    torch.manual_seed(0)
    small, mask = torch.randn(1, 1, 3, 4), torch.rand(1, 1, 12, 16)
    up = F.interpolate(small, size=(12, 16), mode="bilinear", align_corners=False)
    lhs = (up * mask).sum()
    rhs = (small * upsample_adjoint(mask, (3, 4))).sum()
    assert torch.allclose(lhs, rhs, atol=1e-5)


def test_masked_average_pooling_equals_panet_upsample_then_average():
    torch.manual_seed(1)
    features = torch.randn(5, 4, 4)
    target = torch.zeros(16, 16, dtype=torch.long)
    target[2:9, 3:12] = 1
    target[12:, :] = IGNORE
    weights = class_weights(target, 1, (4, 4))
    prototypes, mass = masked_average_pooling(features, weights)
    upsampled = F.interpolate(features[None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    for k in (0, 1):
        region = target == k
        expected = upsampled[:, region].mean(1)
        assert torch.allclose(prototypes[k], expected, atol=1e-5)
        assert mass[k] == pytest.approx(region.sum().item(), rel=1e-5)


def test_cosine_scores_and_background_prototype_by_hand():
    # Two orthogonal feature directions: cells 0 (left column) are "background", right column "class".
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, :, 0] = 1.0
    features[0, 1, :, 1] = 3.0
    target = torch.tensor([[0, 0, 1, 1]] * 4)  # the right half of a 4x4 mask is class 1
    protos = build_prototypes([features[0]], [target], [7], mode="global")
    assert protos.class_ids == [7]
    assert protos.vectors.shape == (2, 2)
    # Background prototype points mostly along channel 0, class prototype mostly along channel 1.
    assert protos.vectors[0, 0] > protos.vectors[0, 1] and protos.vectors[1, 1] > protos.vectors[1, 0]
    sims = class_similarity(features, protos)
    expected = F.normalize(features, dim=1).permute(0, 2, 3, 1) @ protos.vectors.T
    assert torch.allclose(sims, expected.permute(0, 3, 1, 2), atol=1e-6)
    index, similarity = segment(features, protos, size=(2, 2))
    assert index[0].tolist() == [[0, 1], [0, 1]]
    assert torch.allclose(similarity, sims)
    assert torch.allclose(probabilities(similarity, 20.0), torch.softmax(20.0 * sims, 1), atol=1e-6)


def test_self_support_lets_uncertain_cells_follow_the_scans_own_confident_cells():
    # Support prototypes: background e0, class e1. The query's lesion looks different from the support's:
    # its clear cell c = e1 + 0.8 e2 is still confidently the class, and cell u (slightly closer to e0
    # than to e1) is nearly c, so with self-support u joins the class; cell b = e0 stays background.
    protos = PrototypeSet(torch.eye(3)[:2], torch.tensor([0, 1]), torch.tensor([True, True]), [1])
    c = torch.tensor([0.0, 1.0, 0.8])
    u = torch.tensor([0.55, 0.5, 0.8])
    b = torch.tensor([1.0, 0.0, 0.0])
    features = torch.stack([c, u, b, b], 1).reshape(1, 3, 2, 2)
    plain = class_similarity(features, protos).argmax(1)[0]
    assert plain.tolist() == [[1, 0], [0, 0]]
    supported = self_supported_similarity(features, protos, margin=0.1)
    assert supported.shape == (1, 2, 2, 2)
    assert supported.argmax(1)[0].tolist() == [[1, 1], [0, 0]]
    # Only cells that win by more than the margin support the others: u itself (margin 0.05) does not.
    assert torch.allclose(self_supported_similarity(features, protos, margin=1.5), class_similarity(features, protos))
    assert segment(features, protos, (2, 2), self_support=0.1)[0][0].tolist() == [[1, 1], [0, 0]]
    with pytest.raises(FewShotError, match="self-support margin"):
        SegmentationParams(self_support=-0.1)


def test_local_prototypes_keep_windows_the_class_covers():
    features = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    target = torch.zeros(8, 8, dtype=torch.long)
    target[:, :4] = 1  # left half: two feature columns covered by class 1
    weights = class_weights(target, 1, (4, 4))
    vectors, owner, cells = local_prototypes(features, weights, grid=1, coverage=0.9)
    assert (owner == 1).sum() == 4 and (owner == 0).sum() == 4  # outer columns only; the two middle ones are mixed
    assert torch.allclose(vectors[owner == 1][:, 0].sort().values, features[0, :, 0].sort().values)
    assert torch.equal(vectors[:, 0], features[0][cells[:, 0], cells[:, 1]])  # each cell is where its vector came from
    grid_vectors, grid_owner, grid_cells = local_prototypes(features, weights, grid=2, coverage=0.5)
    assert len(grid_owner) == 4 and set(grid_owner.tolist()) == {0, 1}
    assert ((grid_cells[:, 1] < 2) == (grid_owner == 1)).all()  # a window's cell lies in its class's half


def test_max_local_prototypes_caps_each_class():
    torch.manual_seed(2)
    features = torch.randn(8, 16, 16)
    target = torch.zeros(128, 128, dtype=torch.long)
    target[:64] = 1
    protos = build_prototypes([features], [target], [1], mode="local", max_local=10)
    assert protos.counts == {0: 11, 1: 11}  # 10 local + 1 global per class


def test_dense_and_scribble_support_semantics():
    labels = np.zeros((3, 6, 6), np.uint8)
    labels[1, 1:3, 1:3] = 4
    labels[1, 4:, 4:] = 9
    dense = parse_support(labels)
    assert dense.slice_indices == [1] and dense.class_ids == [4, 9]
    assert dense.targets[1][0, 0] == 0 and dense.targets[1][1, 1] == 1 and dense.targets[1][5, 5] == 2
    labels[2, 0, :] = 1  # background scribble on slice 2
    scribble = parse_support(labels, mode="scribble", background_label=1)
    assert scribble.slice_indices == [1, 2] and scribble.class_ids == [4, 9]
    assert scribble.targets[1][0, 0] == IGNORE and scribble.targets[2][0, 3] == 0


@pytest.mark.parametrize("labels, message", [
    (np.zeros((2, 5, 5), np.uint8), "no painted pixels"),
    (np.full((2, 5, 5), 0.5), "whole-number"),
    (-np.ones((2, 5, 5), np.int16), "negative"),
])
def test_bad_support_is_explained(labels, message):
    with pytest.raises(FewShotError, match=message):
        parse_support(labels)


def test_alignment_loss_adds_panets_second_cross_entropy_on_a_toy_case():
    # Orthogonal features: each cell has cosine 1 with its own class's prototype and 0 with the other.
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, :, 0] = 1.0
    features[0, 1, :, 1] = 1.0
    target = torch.tensor([[0, 1], [0, 1]])
    params = SegmentationParams(prototype_mode="global", scale=1.0)
    no_align = _episode_loss(features, target, features, target, params, weight=0.0)
    with_align = _episode_loss(features, target, features, target, params, weight=1.0)
    # With scale 1 the logits are (1, 0) for every cell, so each cross-entropy is log(1 + e^-1).
    single = float(np.log1p(np.exp(-1.0)))
    assert no_align.item() == pytest.approx(single, rel=1e-3)
    assert with_align.item() == pytest.approx(2 * single, rel=1e-3)
    # Swap the query target: its cross-entropy becomes log(1 + e^1) while the alignment term,
    # built from the (still correct) prediction, stays log(1 + e^-1).
    wrong = _episode_loss(features, target, features, 1 - target, params, weight=1.0)
    assert wrong.item() == pytest.approx(float(np.log1p(np.exp(1.0))) + single, rel=1e-3)


def test_class_volumes_in_millilitres():
    from napari_fewshot.core.metrics import class_volumes

    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, :2, :2] = 3  # 4 voxels of 2 x 1.5 x 1.5 mm = 18 mm^3
    assert class_volumes(labels, [3, 7], (2.0, 1.5, 1.5)) == {3: (4, 0.018), 7: (0, 0.0)}


def test_label_values_are_np_uniques_small_or_large():
    from napari_fewshot.core.support import label_values

    rng = np.random.default_rng(0)
    for plane in (np.zeros((50, 70), np.int64), rng.integers(0, 5, (50, 70)), np.array([[0, 70000, 3]]),
                  np.array([[2 ** 40, 0]]), np.zeros((0, 3), np.int64)):
        assert np.array_equal(label_values(plane), np.unique(plane))
    support = parse_support([np.array([[0, 7], [0, 0]]), np.zeros((2, 2), int), np.array([[70000, 0], [3, 0]])])
    assert support.class_ids == [3, 7, 70000]
