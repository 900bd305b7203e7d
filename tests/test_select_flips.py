"""A box on one image must not spoil the images nobody touched, on real BUSI images (core/select_objects.py KEEP,
session 21 "flips"): the box loop's seed-2 case, where boxing `malignant (50)` after the three first boxes made the
untouched `benign (47)` show another object (Dice 0.83 -> 0.00 with today's default) and `benign (12)` too (0.91 ->
0.23) when every image is chosen afresh (KEEP None, the default before session 21). Its previous object still scores
clearly better than the new winner, so with KEEP -0.03 (the default) the image keeps it;
an image whose new object scores better (`benign (28)`, 0.00 -> 0.46) still changes. The first Segment (no previous
selection) is the same with and without it. Skips (fails in CI) without ../shared/data/busi."""

import numpy as np
import pytest

from shared_data import BUSI, require

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
from napari_fewshot.core import select_objects

BOXED = ["malignant/malignant (51)", "malignant/malignant (49)", "benign/benign (8)"]
NEW = "malignant/malignant (50)"  # boxed after the first Segment
UNTOUCHED = ["benign/benign (47)", "malignant/malignant (28)", "benign/benign (28)", "malignant/malignant (15)",
             "benign/benign (12)"]  # the set matters: the selection's profiles come from the nearest painted images
KEEP = -0.03  # session 21's margin, the default: the previous object must score better by more than 0.03


@pytest.fixture(scope="module")
def busi_loop_case():
    """(images, references, the box tool's masks of BOXED + [NEW]) as the box loop makes them."""
    from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter, clip_box
    from napari_fewshot.core.sam_prompt import box_of

    from napari_fewshot.io import read_busi_mask, read_volume

    folder = require(BUSI)
    images, references = [], []
    for name in BOXED + [NEW] + UNTOUCHED:  # read as `evaluate busi` reads them (datasets.load_busi)
        path = folder / f"{name}.png"
        image = read_volume(path).data[0]
        images.append(image if image.ndim == 2 else image.mean(-1).astype(image.dtype))
        references.append(read_busi_mask(path).astype(bool))
    segmenter = FewShotSegmenter(SegmentationParams())
    segmenter.set_image(images)
    boxes = BoxSegmenter(BoxParams(cached_planes=len(images)))
    masks = [boxes.mask(segmenter.stack.slice(i), clip_box(box_of(references[i], 0.1), segmenter.stack.shape_of(i)))
             for i in range(len(BOXED) + 1)]
    return images, references, masks


def _segment_twice(case, keep):
    """Labels of the first Segment (BOXED painted) and of the second (NEW painted too), with select_objects.KEEP."""
    images, _, masks = case
    # a case of lite0's maps: with lite0+LiteMedSAM (the default on images) the control keeps benign (47) too
    segmenter = FewShotSegmenter(SegmentationParams(encoder="efficientnet-lite0"))
    segmenter.set_image(images)
    paint = [np.zeros(image.shape[:2], np.uint8) for image in images]
    for i in range(len(BOXED)):
        paint[i] = masks[i].astype(np.uint8)
    old, select_objects.KEEP = select_objects.KEEP, keep
    try:
        first = [np.asarray(x).copy() for x in run(segmenter.segment(paint)).labels]
        paint[len(BOXED)] = masks[len(BOXED)].astype(np.uint8)
        second = [np.asarray(x).copy() for x in run(segmenter.segment(paint)).labels]
    finally:
        select_objects.KEEP = old
    return first, second


def test_a_new_box_leaves_an_untouched_busi_image_its_object_and_the_first_segment_is_unchanged(busi_loop_case):
    """The control (KEEP None: chosen afresh) shows the flip; with KEEP -0.03, the default, benign (47) keeps its lesion."""
    assert select_objects.KEEP == KEEP
    _, references, _ = busi_loop_case
    first_off, second_off = _segment_twice(busi_loop_case, None)
    first_on, second_on = _segment_twice(busi_loop_case, KEEP)
    # a first Segment has no previous selection: identical labels with and without the rule
    assert all(np.array_equal(a, b) for a, b in zip(first_off, first_on))
    untouched = len(BOXED) + 1  # benign (47)
    before = dice(first_off[untouched] == 1, references[untouched])
    assert before > 0.7
    # the control: chosen afresh, the new support moves benign (47) to another object
    assert dice(second_off[untouched] == 1, references[untouched]) < before - 0.5
    # with the rule its previous object, clearly better under the new support, stays
    assert np.array_equal(second_on[untouched], first_on[untouched])
    # an image whose new object scores better still follows the new support (benign (28): a miss that is fixed)
    rising = untouched + 2
    assert dice(second_on[rising] == 1, references[rising]) > dice(first_on[rising] == 1, references[rising]) + 0.3
