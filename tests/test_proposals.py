"""Propose and select (core/proposals.py) and the candidate score (core/candidate_score.py): synthetic maps with
known answers, and on a real BUSI image the reference lesion scored above a decoy of the same size."""

import numpy as np
import pytest

from napari_fewshot.core.candidate_score import SupportProfile, prototype_contrast, support_similarity_range
from napari_fewshot.core.proposals import peak_points, propose_boxes, select_object


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_profile_reads_sizes_and_shapes_of_the_painted_objects():
    masks = [_disk((100, 100), (50, 50), 10), _disk((200, 100), (100, 50), 10), np.zeros((50, 50), bool)]
    profile = SupportProfile.from_masks(masks)
    assert len(profile.log_area) == 2  # the empty image is not a painted object
    assert profile.size_deviation(float(masks[0].mean())) == 0.0
    assert profile.size_deviation(0.9) > 2  # a whole-image candidate is unlike every painted lesion
    height, width = profile.typical_box((100, 100))
    assert 15 < height < 22 and 18 < width < 22
    assert SupportProfile.from_masks([np.zeros((5, 5), bool)]) is None


def test_an_object_that_stands_out_scores_above_one_that_does_not():
    evidence = np.zeros((100, 100), np.float32)
    lesion, shadow = _disk((100, 100), (30, 30), 8), _disk((100, 100), (70, 70), 8)
    evidence[lesion] = 0.3
    evidence[_disk((100, 100), (70, 70), 20)] = 0.3  # the shadow matches as well as its surroundings
    profile = SupportProfile.from_masks([_disk((100, 100), (50, 50), 8)])
    assert prototype_contrast(lesion, evidence, profile) > prototype_contrast(shadow, evidence, profile)
    assert prototype_contrast(np.zeros((100, 100), bool), evidence, profile) == float("-inf")
    # the same contrast but ten times the painted size loses to the right size
    big = _disk((100, 100), (50, 50), 30)
    evidence2 = np.where(big, 0.3, 0.0).astype(np.float32) + np.where(lesion, 0.3, 0.0)
    assert prototype_contrast(lesion, evidence2, profile) > prototype_contrast(big, evidence2, profile)


def test_peaks_are_found_strongest_first_and_proposals_include_components():
    margin = np.full((120, 120), -0.1, np.float32)
    margin[_disk((120, 120), (30, 90), 6)] = 0.2
    margin[_disk((120, 120), (90, 30), 6)] = 0.1
    peaks = peak_points(margin, 5)
    assert len(peaks) == 2 and abs(peaks[0][0] - 30) <= 3 and abs(peaks[1][1] - 30) <= 3
    coarse = margin > 0
    profile = SupportProfile.from_masks([_disk((120, 120), (60, 60), 10)])
    boxes = propose_boxes(margin, coarse, profile, peaks=2, min_pixels=10)
    assert len(boxes) == 4  # two components, two peak boxes
    assert propose_boxes(margin, coarse, None, peaks=2, min_pixels=10).shape == (2, 4)


def test_select_keeps_the_candidate_most_like_the_support():
    shape = (120, 120)
    margin = np.full(shape, -0.1, np.float32)
    lesion, decoy = _disk(shape, (30, 90), 8), _disk(shape, (80, 40), 30)
    margin[decoy] = 0.05  # a large, weak region (a shadow)
    margin[lesion] = 0.3
    profile = SupportProfile.from_masks([_disk(shape, (60, 60), 9)])

    def decode(boxes, masks):  # a stand-in for LiteMedSAM: the disk inscribed in each box
        out = []
        for x0, y0, x1, y1 in boxes:
            centre, radius = ((y0 + y1) / 2, (x0 + x1) / 2), min(x1 - x0, y1 - y0) / 2
            out.append(_disk(shape, centre, radius).astype(np.float32))
        return np.stack(out)

    chosen = select_object(margin, margin > 0, decode, profile, min_pixels=10)
    assert (chosen & lesion).sum() > 0.5 * lesion.sum() and not (chosen & decoy).any()
    assert select_object(np.full(shape, -0.1, np.float32), np.zeros(shape, bool), decode, None) is None


def test_support_range_holds_out_each_slices_own_prototypes():
    targets = {0: np.array([[0, 1], [0, 1]]), 1: np.array([[1, 0], [0, -1]])}
    held_out = {0: np.array([[[0, 0], [0, 0]], [[0.1, 0.8], [0.2, 0.6]]]),
                1: np.array([[[0, 0], [0, 0]], [[0.7, 0.3], [0.0, 0.9]]])}
    low, high = support_similarity_range(held_out, targets, 1)[1]
    assert low == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.0], 0.95))  # the -1 cell says nothing
    assert high == pytest.approx(np.quantile([0.8, 0.6, 0.7], 0.9))
    # painted objects no more similar than their background: no scale from the support (the caller keeps its own)
    inverted = {0: np.array([[[0, 0], [0, 0]], [[0.9, 0.1], [0.9, 0.1]]])}
    assert support_similarity_range(inverted, {0: targets[0]}, 1) == {}


@pytest.fixture(scope="module")
def busi_episode():
    """Benign (1) segmented from five other BUSI images (lite0, no refine), with heatmaps: (result, truth,
    support masks, the query image); skips without ../shared/data."""
    from shared_data import BUSI, require

    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
    from napari_fewshot.core.config import RefineParams
    from napari_fewshot.evaluation.datasets import load_busi

    names, images, masks = load_busi(require(BUSI))
    query, supports = 0, [5, 17, 63, 80, 101]
    segmenter = FewShotSegmenter(SegmentationParams(refine=RefineParams(enabled=False)))
    segmenter.set_image([images[i] for i in (query, *supports)])
    support = [np.zeros(masks[query].shape, np.uint8)] + [masks[i].astype(np.uint8) for i in supports]
    result = run(segmenter.segment(support, indices=[0], similarity=True))
    return result, masks[query], [masks[i] for i in supports], images[query]


def test_heatmap_range_comes_from_the_supports_own_levels(busi_episode):
    """The range is the support's, not the query's: each painted image matched without its own prototypes, its
    best-matching lesion cells reach above where its background stops, and on the query only a small part of
    the image is in full colour. (On this query the lesion itself stays dark, median below the image's
    background: the prototypes barely find it, and the heatmap says so.)"""
    result, truth, _, _ = busi_episode
    low, high = result.similarity_range[1]
    assert -1 <= low < high <= 1
    evidence = result.similarity[1][0].astype(np.float32)
    assert (evidence >= high).mean() < 0.25


def test_on_a_real_busi_image_the_lesion_outscores_a_decoy_of_its_size(busi_episode):
    """The reference lesion against the same shape moved to the mirrored side of the image. The prototype map's
    contrast (prototype_contrast) prefers the decoy on this image (BENCHMARKS.md, 'Propose and select'); the
    selection's score, how much the candidate differs from its ring in LiteMedSAM's embedding, does not."""
    from napari_fewshot.core.sam_prompt import BoxPrompter
    from napari_fewshot.core.select_objects import embedding_contrast

    result, truth, supports, image = busi_episode
    decoy = truth[:, ::-1]
    assert not (decoy & truth).any(), "the decoy must lie elsewhere"
    embedding = BoxPrompter().embed(image)
    lesion, other = embedding_contrast(embedding, truth), embedding_contrast(embedding, decoy)
    assert lesion > other + 0.1, (lesion, other)
