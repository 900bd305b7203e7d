"""Propose and select grows the lesion it found (core/select_objects.py grow, GROW_SIDES / GROW_CORE; BENCHMARKS.md,
session 19 "grow"): on a real BUSI mass of which LiteMedSAM was given only part, a box grown by half the drawn
part's size on one side draws the whole mass and scores higher; a lesion already well drawn keeps its outline;
the side boxes go where the class margin stays high."""

import numpy as np

from busi_select_case import busi_case

from napari_fewshot.core import dice
from napari_fewshot.core.proposals import decoded_masks
from napari_fewshot.core.sam_prompt import box_of
from napari_fewshot.core.select_objects import full_size, growing_boxes, selection_score


def _start(case, box):
    """The object LiteMedSAM draws from `box` as select_plane holds it: (full-size mask, (1, 4) box, low-res
    probabilities, score)."""
    reference, embedding, decode, profile = case
    box = np.asarray(box, np.float32)[None]
    low = decode(box, True)
    size = embedding.resized
    shrink = np.array([size[1] / reference.shape[1], size[0] / reference.shape[0]] * 2, np.float32)
    score = selection_score(embedding, decoded_masks(box * shrink, low)[0], profile)
    return decoded_masks(box, full_size(low, reference.shape))[0], box, low, score


def test_a_mass_boxed_in_part_is_grown_to_the_whole_mass_with_a_higher_score():
    """malignant (58), a large lobulated mass; LiteMedSAM given the upper 55 % of its box draws that part (Dice
    ~0.69). The growing round (the drawn part's box grown by half its size on each side, here every side: no margin
    map) draws the whole mass (Dice > 0.82) and is kept because it scores higher. Fails on main (no grow)."""
    from napari_fewshot.core.select_objects import grow

    case = busi_case("malignant/malignant (58)", ["malignant/malignant (3)", "malignant/malignant (8)"])
    reference, embedding, decode, profile = case
    x0, y0, x1, y1 = box_of(reference, 0.0)
    drawn, box, low, score = _start(case, [x0, y0, x1, y0 + 0.55 * (y1 - y0)])
    new_box, new_low, new_score = grow(drawn, box, low, score, decode, embedding, profile, None, rounds=1)
    after = decoded_masks(new_box, full_size(new_low, reference.shape))[0]
    assert dice(drawn, reference) < 0.75
    assert dice(after, reference) > 0.82 and new_score > score
    assert new_box[0, 3] > box[0, 3] + 0.3 * (box[0, 3] - box[0, 1])  # grown downwards, where the rest lies


def test_a_well_drawn_cyst_keeps_its_outline():
    """benign (21), a dark cyst given its own box + 5 %, a class margin high on the cyst only (a stand-in for the
    prototypes'): no grown box and no core box scores higher, so the box, its decode and its score come back
    unchanged (the same objects)."""
    from napari_fewshot.core.select_objects import grow

    case = busi_case("benign/benign (21)", ["benign/benign (3)", "benign/benign (8)"])
    reference, embedding, decode, profile = case
    drawn, box, low, score = _start(case, box_of(reference, 0.05))
    assert dice(drawn, reference) > 0.85
    margin = np.where(reference, 1.0, -1.0).astype(np.float32)
    same_box, same_low, same_score = grow(drawn, box, low, score, decode, embedding, profile, margin)
    assert same_box is box and same_low is low and same_score == score


def test_side_boxes_go_where_the_class_margin_stays_high():
    """A drawn square with the class margin high only to its right and below: the two side boxes grown are the
    right and the bottom ones (by half the square's size), then the core box; without a margin map all four."""
    drawn = np.zeros((100, 120), bool)
    drawn[40:60, 40:60] = True
    margin = np.full(drawn.shape, -1.0, np.float32)
    margin[:, 60:] = 0.5
    margin[60:, :] = 0.3
    probabilities = np.where(drawn, 0.99, 0.01).astype(np.float32)[None]
    boxes = growing_boxes(drawn, probabilities, margin, (), (0.5,), 2, 0.97)
    np.testing.assert_allclose(boxes[0], [40, 40, 69, 59])  # right: x1 59 + 10
    np.testing.assert_allclose(boxes[1], [40, 40, 59, 69])  # bottom
    np.testing.assert_allclose(boxes[2], box_of(drawn, 0.05))  # the confident core (here the square)
    assert len(boxes) == 3
    assert len(growing_boxes(drawn, probabilities, None, (), (0.5,), 2, None)) == 4
