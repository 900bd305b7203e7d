"""Which local prototypes a painted 2D image keeps past the cap (core/subsample.py; SegmentationParams.
image_local_sampling): grid, fps and kmeans do not depend on the seed and cover the image (in space, in feature
space) better than the seeded random subsample; random is today's subsample; volumes always get random. Real BUSI
images with the real lite0 encoder (skipped without ../shared/data/busi). Fail on main (no module, no setting)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from busi_select_case import busi_image

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.config import RefineParams
from napari_fewshot.core.subsample import subsample
from napari_fewshot.errors import FewShotError

NAMES = ["benign/benign (21)", "malignant/malignant (5)"]  # query, painted


def segmenter_for(images, **settings) -> FewShotSegmenter:
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", refine=RefineParams(enabled=False), **settings))
    segmenter.set_image(images)
    return segmenter


@pytest.fixture(scope="module")
def painted():
    """The painted BUSI image's local group under each sampling and seed, and its pooled cells:
    {(sampling, seed): PrototypeGroup}, (n, C) unit background vectors, (n, 2) their cells."""
    pairs = [busi_image(name) for name in NAMES]
    images = [p[0] for p in pairs]
    support = [np.zeros(pairs[0][1].shape, np.uint8), pairs[1][1].astype(np.uint8)]
    groups = {}
    for sampling in ("random", "grid", "fps", "kmeans"):
        for seed in (0, 7):
            segmenter = segmenter_for(images, image_local_sampling=sampling, seed=seed)
            support_set = segmenter.parse_support(support)
            (local,) = segmenter._groups(support_set)[1:]
            groups[(sampling, seed)] = local
    piece = next(iter(segmenter._pieces(support_set).values()))
    background = piece.local_owner == 0
    return groups, F.normalize(piece.local_vectors[background].float(), dim=1), piece.cells()[background]


def background(group):
    return group.vectors[group.bounds[0]:group.bounds[1]], group.origins[group.bounds[0]:group.bounds[1], 1:]


def test_the_deterministic_subsamples_ignore_the_seed_and_keep_the_cap(painted):
    groups, cells_v, _ = painted
    assert len(cells_v) > 1000  # a 384 px image's background: ~1,600 cells, capped to 512
    for sampling in ("grid", "fps", "kmeans"):
        assert torch.equal(groups[(sampling, 0)].vectors, groups[(sampling, 7)].vectors)
        assert groups[(sampling, 0)].key[2:] == groups[(sampling, 7)].key[2:]  # one match cache entry whatever the seed
        assert groups[(sampling, 0)].bounds[1] == 512
    assert not torch.equal(groups[("random", 0)].vectors, groups[("random", 7)].vectors)
    assert groups[("grid", 0)].bounds[2] - groups[("grid", 0)].bounds[1] == \
        groups[("random", 0)].bounds[2] - groups[("random", 0)].bounds[1]  # the lesion (< 512 cells) kept whole


def test_grid_covers_the_image_and_fps_covers_feature_space(painted):
    groups, vectors, cells = painted

    def farthest_cell(group):  # the background cell farthest (in cells) from any kept prototype's cell
        kept = background(group)[1].float()
        return float(torch.cdist(cells.float(), kept).min(1).values.max())

    def covering(group):  # the background cell least like any kept prototype (1 - cosine)
        return float(1 - (vectors @ background(group)[0].T).max(1).values.min())

    random = [groups[("random", s)] for s in (0, 7)]
    # measured on this image: grid 2.24 cells, random 3.0 / 3.16 (seeds 0 / 7: chance leaves holes)
    assert farthest_cell(groups[("grid", 0)]) <= 2.5 < min(farthest_cell(g) for g in random)
    # fps keeps the rare looks: no background cell far from a prototype (measured 0.21 against random's 0.36 / 0.40)
    assert covering(groups[("fps", 0)]) < 0.75 * min(covering(g) for g in random)
    # kmeans centroids: each origin is a background cell of the image
    origins = {tuple(c) for c in background(groups[("kmeans", 0)])[1].tolist()}
    assert origins <= {tuple(c) for c in cells.tolist()}


def test_random_is_the_seeded_subsample_of_before():
    generator = torch.Generator().manual_seed(3)
    vectors, owner = torch.randn(40, 8), torch.tensor([0] * 30 + [1] * 10)
    cells = torch.stack([torch.arange(40) // 8, torch.arange(40) % 8], 1)
    kept, kept_owner, kept_cells = subsample(vectors, owner, cells, 1, 12, seed=3)
    expected = torch.randperm(30, generator=generator)[:12]  # what prototypes._cap_per_class drew
    assert torch.equal(kept[:12], vectors[expected]) and torch.equal(kept_cells[:12], cells[expected])
    assert torch.equal(kept[12:], vectors[30:]) and kept_owner.tolist() == [0] * 12 + [1] * 10


def test_volumes_always_get_the_seeded_subsample(chaos_case):
    volume, labels = chaos_case
    picks = [int(np.flatnonzero((labels == 1).any((1, 2)))[n]) for n in (5, 15)]
    support = np.zeros(labels.shape, np.uint8)
    support[picks] = labels[picks] == 1
    out = []
    for sampling in ("random", "fps"):  # a small cap, so that the volume's slices are subsampled at all
        segmenter = segmenter_for(volume, image_local_sampling=sampling, max_local_prototypes=64)
        out.append(run(segmenter.segment(support)).labels)
    assert np.array_equal(out[0], out[1]) and (out[0] == 1).sum() > 1000


def test_an_unknown_sampling_is_one_sentence():
    with pytest.raises(FewShotError, match="Local prototype sampling must be"):
        SegmentationParams(image_local_sampling="sorted")
