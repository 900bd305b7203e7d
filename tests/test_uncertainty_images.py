"""Check next on an image set ranks by estimated 1 - Dice: a confident miss (nothing found, or a blob of the
wrong size where nothing looks like the support's objects) comes before a good prediction."""

import numpy as np
import pytest

from napari_fewshot.core import uncertainty
from napari_fewshot.core.segmenter import SegmentationResult
from napari_fewshot.core.uncertainty import (
    JITTERED_BOXES,
    box_signs,
    foreground_contrast,
    image_error,
    rank_slices,
    support_sizes,
)

SIZE, GRID, SCALE = 64, 8, 20.0  # 64 x 64 px images, an 8 x 8 feature grid (stride 8)


@pytest.fixture(autouse=True)
def _all_signs(monkeypatch):
    """These tests are about the signs with the stability of moved boxes (CHECK_NEXT "signs"; the default ranks by
    LiteMedSAM's estimate alone, tests/test_check_next_cost.py)."""
    monkeypatch.setattr(uncertainty, "CHECK_NEXT", "signs")


def disc(centre, radius, size=SIZE):
    rows, cols = np.mgrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def scores_for(lesion: np.ndarray, seed: int) -> np.ndarray:
    """(2, GRID, GRID) similarity: the lesion's cells look like the support's lesions, the rest like background,
    with noise."""
    rng = np.random.default_rng(seed)
    cells = lesion.reshape(GRID, SIZE // GRID, GRID, SIZE // GRID).mean(axis=(1, 3))
    foreground = 0.5 + 0.3 * cells + rng.normal(0, 0.03, cells.shape)
    return np.stack([0.8 - 0.3 * cells + rng.normal(0, 0.03, cells.shape), foreground]).astype(np.float32)


def test_an_empty_prediction_and_a_far_away_wrong_size_blob_rank_above_a_good_prediction():
    lesion = disc((24, 24), 12)  # every image's true lesion (about 11 % of the image)
    support = [disc((30, 34), 15).astype(np.uint8), disc((28, 28), 17).astype(np.uint8)]  # 17 and 22 %
    good = disc((25, 24), 11).astype(np.uint8)  # close to the lesion
    blob = disc((56, 56), 6).astype(np.uint8)  # a small circle away from it (2.8 % of the image)
    empty = np.zeros((SIZE, SIZE), np.uint8)
    labels = [*support, good, empty, blob]
    coarse = {i: scores_for(lesion, i) for i in (2, 3, 4)}

    ranked = rank_slices(coarse, labels, is_volume=False, scale=SCALE, support=[0, 1])
    result = SegmentationResult(labels, [1], [0, 1], [2, 3, 4], uncertainty=ranked)
    assert result.check_order() == [3, 4, 2]  # nothing found, then the wrong blob, then the good one
    assert ranked[3] == 1.0 and ranked[4] > 0.8 and ranked[2] < 0.5, ranked
    assert all(0.0 <= v <= 1.0 for v in ranked.values())

    # each sign on its own: the blob does not stand out from its surroundings, the good prediction does
    assert foreground_contrast(coarse[2], good) > 1.0 > foreground_contrast(coarse[4], blob)
    sizes = support_sizes(support)
    assert len(sizes) == 2 and image_error(coarse[2], good, sizes, SCALE) == ranked[2]
    # the same blob where the lesion is, at the lesion's size, is no miss: the size and the contrast decide
    assert image_error(coarse[4], lesion.astype(np.uint8), sizes, SCALE) < ranked[4]


def test_a_volume_keeps_the_boundary_ranking_in_pixels():
    lesion = disc((24, 24), 12)
    labels = np.stack([lesion, lesion, np.zeros_like(lesion)]).astype(np.uint8)
    coarse = {1: scores_for(lesion, 1), 2: scores_for(lesion, 2)}
    ranked = rank_slices(coarse, labels, is_volume=True, scale=SCALE, support=[0])
    assert ranked[2] > 1.0  # expected wrong pixels (the slice's label change against its neighbour), not 1 - Dice


def test_a_prediction_litemedsam_redraws_differently_under_a_moved_box_ranks_above_a_stable_one():
    lesion = disc((24, 24), 10)
    support = [disc((30, 34), 11).astype(np.uint8)]
    tidy, shadow = disc((24, 24), 10).astype(np.uint8), disc((40, 40), 10).astype(np.uint8)
    labels = [*support, tidy, shadow]
    coarse = {1: scores_for(lesion, 1), 2: scores_for(disc((40, 40), 10), 2)}  # both stand out alike
    rows, cols = np.mgrid[:SIZE, :SIZE]

    def decode(index, boxes):
        """Image 1: the lesion whatever the box; image 2: the box's own inscribed ellipse (it follows the box)."""
        boxes = np.asarray(boxes)
        assert boxes.shape == (1 + JITTERED_BOXES, 4)
        if index == 1:
            return np.repeat(lesion[None].astype(np.float32), len(boxes), 0)
        out = []
        for x0, y0, x1, y1 in boxes:
            cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, max((y1 - y0) / 2, 1), max((x1 - x0) / 2, 1)
            out.append((((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1).astype(np.float32))
        return np.stack(out)

    assert box_signs(tidy, lambda b: decode(1, b))[0] == 1.0
    assert box_signs(shadow, lambda b: decode(2, b))[0] < 0.9
    plain = rank_slices(coarse, labels, is_volume=False, scale=SCALE, support=[0])
    ranked = rank_slices(coarse, labels, is_volume=False, scale=SCALE, support=[0], decode=decode)
    assert ranked[1] == plain[1]  # a stable redraw adds no sign of a miss
    assert ranked[2] > plain[2] and ranked[2] > ranked[1]
    nothing = rank_slices({1: coarse[1]}, [support[0], np.zeros_like(tidy)], False, SCALE, [0], decode=lambda *_: 1 / 0)
    assert nothing == {1: 1.0}  # nothing found: first, and the decoder is not asked
    # a volume keeps its boundary ranking: the decoder is not asked
    volume = np.stack([tidy, tidy, shadow])
    assert rank_slices({2: coarse[2]}, volume, True, SCALE, [0], decode=None) == \
        rank_slices({2: coarse[2]}, volume, True, SCALE, [0], decode=lambda *_: 1 / 0)


def test_stability_is_remembered_per_image_labels_so_a_stroke_elsewhere_decodes_nothing():
    """Re-segmenting a set after a stroke on one image must not redraw every other image's boxes again."""
    support = [disc((30, 34), 11).astype(np.uint8)]
    first, second = disc((24, 24), 10).astype(np.uint8), disc((40, 40), 9).astype(np.uint8)
    coarse = {1: scores_for(first.astype(bool), 1), 2: scores_for(second.astype(bool), 2)}
    asked = []

    def decode(index, boxes):
        asked.append(index)
        return np.repeat([first, first, second][index][None].astype(np.float32), len(boxes), 0)

    decode.memo = {}
    once = rank_slices(coarse, [*support, first, second], False, SCALE, [0], decode=decode)
    assert sorted(asked) == [1, 2]
    again = rank_slices(coarse, [*support, first, second], False, SCALE, [0], decode=decode)
    assert again == once and sorted(asked) == [1, 2]  # nothing changed: nothing decoded
    moved = disc((40, 40), 12).astype(np.uint8)  # image 2's prediction changed: only it is redrawn
    rank_slices(coarse, [*support, first, moved], False, SCALE, [0], decode=decode)
    assert sorted(asked) == [1, 2, 2]


def test_litemedsam_rating_its_own_mask_low_ranks_a_crisp_miss_above_a_crisp_hit():
    """Two predictions that stand out alike and that LiteMedSAM redraws the same under any moved box (the
    stability sign calls both safe): the one whose mask LiteMedSAM itself rates low (a crisp blob on the wrong
    object) must come first when the decoder gives its IoU estimate, and the memo keeps the estimate."""
    support = [disc((30, 34), 11).astype(np.uint8)]
    hit, miss = disc((24, 24), 10).astype(np.uint8), disc((40, 40), 10).astype(np.uint8)
    coarse = {1: scores_for(hit.astype(bool), 1), 2: scores_for(miss.astype(bool), 2)}
    labels = [*support, hit, miss]
    rating = {1: 0.95, 2: 0.55}
    asked = []

    def decode(index, boxes):
        asked.append(index)
        masks = np.repeat(labels[index][None].astype(np.float32), len(boxes), 0)
        return masks, np.full(len(boxes), rating[index], np.float32)

    decode.memo = {}
    plain = rank_slices(coarse, labels, False, SCALE, [0], decode=lambda i, b: decode(i, b)[0])
    ranked = rank_slices(coarse, labels, False, SCALE, [0], decode=decode)
    assert abs(plain[1] - plain[2]) < 0.05  # without the estimate they are alike (same shape, both stable)
    assert ranked[2] > ranked[1] + 0.15, ranked
    assert np.isclose(ranked[2], 0.5 * (plain[2] + 1 - 0.55)) and np.isclose(ranked[1], 0.5 * (plain[1] + 1 - 0.95))
    asked.clear()
    assert rank_slices(coarse, labels, False, SCALE, [0], decode=decode) == ranked and not asked
    nothing = rank_slices({1: coarse[1]}, [support[0], np.zeros_like(hit)], False, SCALE, [0], decode=decode)
    assert nothing == {1: 1.0}  # nothing found still ranks first


def test_the_refiners_decoder_gives_litemedsam_masks_and_its_iou_estimate_to_check_next():
    """Through the real LiteMedSAM service (low-resolution decode): a bright disc's own box gives a stable mask
    that LiteMedSAM rates well, and the ranking remembers both signs per image."""
    from napari_fewshot.core import FewShotSegmenter, SegmentationParams
    from napari_fewshot.core.uncertainty import refiner_decoder

    size = 128
    rows, cols = np.mgrid[:size, :size]
    image = np.full((size, size), 0.2, np.float32)
    image[(rows - 60) ** 2 + (cols - 70) ** 2 <= 20 ** 2] = 0.9
    lesion = ((rows - 60) ** 2 + (cols - 70) ** 2 <= 20 ** 2).astype(np.uint8)
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image([image, image])
    decode = refiner_decoder(segmenter.refiner, segmenter.stack)
    probabilities, quality = decode(1, np.array([[48, 38, 92, 82]], np.float32))
    assert probabilities.ndim == 3 and quality.shape == (1,) and 0.0 <= float(quality[0]) <= 1.0
    lesion_cells = lesion.reshape(8, 16, 8, 16).mean(axis=(1, 3))
    scores = np.stack([0.8 - 0.3 * lesion_cells, 0.5 + 0.3 * lesion_cells]).astype(np.float32)
    ranked = rank_slices({1: scores}, [lesion, lesion], False, SCALE, [0], decode=decode)
    stability, rated = next(iter(decode.memo.values()))
    assert stability > 0.8 and rated > 0.7, (stability, rated)
    assert 0.0 <= ranked[1] < 0.3, ranked
