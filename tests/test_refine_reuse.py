"""Refine (core/refine.py) after a correction: which decodes are reused (RefineParams.reuse_shift,
reuse_changed), and the window apply_decoded scores."""

import numpy as np
import pytest
from test_refine import CountingPrompter

from napari_fewshot.core import RefineParams, SegmentationParams
from napari_fewshot.core.refine import Refiner, refine_plane
from napari_fewshot.core.sam_prompt import PlaneEmbedding
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.errors import FewShotError


def test_a_box_moved_within_reuse_shift_reuses_its_decode_and_one_moved_further_is_decoded():
    """RefineParams.reuse_shift is in pixels of LiteMedSAM's 256-px input: on a 128 x 128 slice one pixel is
    two. With 2, a box whose edge moved by 1 pixel (2 input px) reuses the kept decode (cropped or padded to
    the new box: the labels are the old box's decode applied to the new component); moved by 2 pixels (4 input
    px) from the box really decoded, it is decoded, even when it moved 1 pixel from a box that reused (reuse
    never drifts). 0, the default, reuses only the very same box (reuse_changed off here)."""
    def striped(boxes, shape=(128, 128)):
        out = CountingPrompter().decode(PlaneEmbedding(None, shape, 256 / max(shape)), boxes)
        out[:, ::3] *= 0.4  # the outcome depends on the probabilities, not only on the box
        return out

    class StripedBoxes(CountingPrompter):
        boxes = []

        def decode(self, embedding, boxes, masks=None):
            StripedBoxes.boxes.extend(np.asarray(boxes).tolist())
            return striped(boxes, embedding.shape)

    def labels_to(x1: int) -> list[np.ndarray]:
        plane = np.zeros((128, 128), np.uint8)
        plane[30:60, 30:x1 + 1] = 1
        return [plane]

    stack = ImageStack(np.random.default_rng(5).random((1, 128, 128)).astype(np.float32))
    tolerant = SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0, reuse_shift=2.0,
                                                      reuse_changed=0.0))
    refiner = Refiner(tolerant, LiteMedSAMService("cpu", prompter_factory=StripedBoxes))
    list(refiner.refine(stack, labels_to(59), [0], [1]))
    assert StripedBoxes.boxes == [[30, 30, 59, 59]]
    moved = labels_to(60)  # x1 59 -> 60: 1 pixel, 2 input px
    list(refiner.refine(stack, moved, [0], [1]))
    assert len(StripedBoxes.boxes) == 1  # reused
    expected = refine_plane(labels_to(60)[0], [1], lambda boxes, masks: striped(np.array([[30, 30, 59, 59.0]])),
                            tolerant.refine)
    assert np.array_equal(moved[0], expected)
    fresh = refine_plane(labels_to(60)[0], [1], lambda boxes, masks: striped(boxes), tolerant.refine)
    assert not np.array_equal(expected, fresh)  # a fresh decode would differ: the reuse is approximate
    list(refiner.refine(stack, labels_to(61), [0], [1]))  # 2 pixels from the box decoded, 1 from the reused
    assert StripedBoxes.boxes[1:] == [[30, 30, 61, 59]]
    exact = Refiner(SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0,
                                                           reuse_changed=0.0)),
                    LiteMedSAMService("cpu", prompter_factory=StripedBoxes))
    list(exact.refine(stack, labels_to(59), [0], [1]))
    list(exact.refine(stack, labels_to(60), [0], [1]))
    assert StripedBoxes.boxes[2:] == [[30, 30, 59, 59], [30, 30, 60, 59]]  # reuse_shift 0: a 1-pixel move decodes
    with pytest.raises(FewShotError):
        RefineParams(reuse_shift=-1.0)


def test_a_component_changed_within_reuse_changed_reuses_its_decode_and_one_changed_more_is_decoded():
    """RefineParams.reuse_changed: a component differing from the one decoded on its slice (same class) by at
    most that share of its pixels reuses the decode, even when a thin spur moved its box far; a component
    changed by more, or of another class, is decoded. 0 reuses only the very same box; the default is 0.05."""
    boxes = []

    class Boxes(CountingPrompter):
        def decode(self, embedding, b, masks=None):
            boxes.extend(np.asarray(b).tolist())
            return super().decode(embedding, b, masks)

    def plane(spur: int = 0, rows: int = 0, label: int = 1) -> list[np.ndarray]:
        out = np.zeros((64, 64), np.uint8)
        out[10:40, 10:40] = label  # 900 pixels
        out[20, 40:40 + spur] = label  # a spur of `spur` pixels: the box reaches 40 + spur - 1
        out[40:40 + rows, 10:40] = label  # `rows` more rows of 30 pixels
        return [out]

    stack = ImageStack(np.random.default_rng(6).random((1, 64, 64)).astype(np.float32))
    params = SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0, reuse_changed=0.05))
    refiner = Refiner(params, LiteMedSAMService("cpu", prompter_factory=Boxes))
    list(refiner.refine(stack, plane(), [0], [1, 2]))
    assert boxes == [[10, 10, 39, 39]]
    spurred = plane(spur=8)  # 8 of 908 pixels changed, the box moved by 8: reused
    list(refiner.refine(stack, spurred, [0], [1, 2]))
    assert len(boxes) == 1
    expected = refine_plane(plane(spur=8)[0], [1, 2], lambda b, m: CountingPrompter().decode(
        PlaneEmbedding(None, (64, 64), 4.0), np.array([[10, 10, 39, 39.0]])), params.refine)
    assert np.array_equal(spurred[0], expected) and not spurred[0][20, 40:].any()  # the old box's decode
    list(refiner.refine(stack, plane(rows=2), [0], [1, 2]))  # 60 of 960 pixels (6 %): decoded
    assert boxes[1:] == [[10, 10, 39, 41]]
    list(refiner.refine(stack, plane(spur=4, label=2), [0], [1, 2]))  # 4 pixels changed, but another class
    assert boxes[2:] == [[10, 10, 43, 39]]
    exact = Refiner(SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0,
                                                           reuse_changed=0.0)),
                    LiteMedSAMService("cpu", prompter_factory=Boxes))
    list(exact.refine(stack, plane(), [0], [1, 2]))
    list(exact.refine(stack, plane(spur=1), [0], [1, 2]))
    assert boxes[3:] == [[10, 10, 39, 39], [10, 10, 40, 39]]  # off: one pixel more decodes
    assert RefineParams().reuse_changed == 0.05 and RefineParams().reuse_shift == 0.0
    with pytest.raises(FewShotError):
        RefineParams(reuse_changed=1.5)


def test_apply_decoded_scores_only_the_boxes_window_and_gives_the_whole_plane_labels():
    """apply_decoded scores the window around the boxes only; outside it every pixel keeps its label. The
    labels must be those of scoring the whole plane (the rule before the window), implausible decodes,
    unprompted components and overlapping classes included."""
    from napari_fewshot.core.refine import FALLBACK, apply_decoded, plane_prompts
    from napari_fewshot.core.sam_prompt import box_region

    def whole_plane(labels, class_ids, prompts, probabilities, params):
        lut = np.array([0] + list(class_ids), labels.dtype)
        decoded = np.zeros((len(class_ids) + 1, *labels.shape), np.float32)
        replaced = np.zeros(decoded.shape, bool)
        for (k, mask), box, prob in zip(prompts.parts, prompts.boxes, probabilities):
            inside = np.where(box_region(box, labels.shape), prob, 0).astype(np.float32)
            area, coarse = int((inside > 0.5).sum()), int(mask.sum())
            if area == 0 or area > params.max_growth * coarse or area * params.max_growth < coarse:
                continue
            replaced[k] |= mask
            np.maximum(decoded[k], inside, out=decoded[k])
        score = np.where((lut[:, None, None] == labels[None]) & ~replaced, FALLBACK, 0.0).astype(np.float32)
        score[0] = 0.5
        np.maximum(score, decoded, out=score)
        return lut[np.argmax(score, axis=0)]

    rng = np.random.default_rng(7)
    params = RefineParams(enabled=True, max_components=2, min_pixels=20)
    checked = 0
    for _ in range(20):
        labels = np.zeros((90, 120), np.uint8)
        for _ in range(5):  # blobs of classes 3 and 5, some too small to prompt, some beyond max_components
            y, x, r = rng.integers(5, 85), rng.integers(5, 115), rng.integers(2, 14)
            yy, xx = np.ogrid[:90, :120]
            labels[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = rng.choice([3, 5])
        prompts = plane_prompts(labels, [3, 5], params)
        if prompts is None:
            continue
        probabilities = rng.random((len(prompts.boxes), 90, 120)).astype(np.float32) ** rng.uniform(0.3, 3)
        out = apply_decoded(labels, [3, 5], prompts, probabilities, params)
        assert out.dtype == labels.dtype and np.array_equal(out, whole_plane(labels, [3, 5], prompts, probabilities,
                                                                             params))
        checked += 1
    assert checked >= 15


def test_a_small_component_changed_by_a_few_pixels_reuses_its_decode_and_one_really_changed_is_decoded():
    """RefineParams.reuse_pixels, in pixels of LiteMedSAM's 256-px input (on a 128 x 128 slice one pixel is 4):
    a small component (an organ's tip, far from the correction) whose edge moved by one pixel changes by more than
    reuse_changed's 5 % of its size, yet reuses its decode when that change is within reuse_pixels; a component
    changed by more than reuse_pixels (and 5 %) is decoded; a large component is still held to the 5 % rule's own
    tolerance (reuse_pixels only adds)."""
    boxes = []

    class Boxes(CountingPrompter):
        def decode(self, embedding, b, masks=None):
            boxes.extend(np.asarray(b).tolist())
            return super().decode(embedding, b, masks)

    def plane(width: int, rows: int = 0) -> list[np.ndarray]:
        out = np.zeros((128, 128), np.uint8)
        out[10:20, 10:10 + width] = 1  # a small component: 10 rows of `width` pixels
        out[60:60 + 30 + rows, 60:90] = 1  # a large one: 900 pixels, `rows` more rows of 30
        return [out]

    stack = ImageStack(np.random.default_rng(8).random((1, 128, 128)).astype(np.float32))
    params = SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0, reuse_pixels=64))
    refiner = Refiner(params, LiteMedSAMService("cpu", prompter_factory=Boxes))
    list(refiner.refine(stack, plane(8), [0], [1]))
    assert sorted(boxes) == [[10, 10, 17, 19], [60, 60, 89, 89]]
    moved = plane(9)  # 10 of 90 pixels more (11 %, 40 input px <= 64): its box moved by 1 pixel, decode reused
    list(refiner.refine(stack, moved, [0], [1]))
    assert len(boxes) == 2
    assert not moved[0][10:20, 18].any()  # the kept decode's outline: the old box's
    list(refiner.refine(stack, plane(11), [0], [1]))  # 30 of 110 pixels (120 input px > 64): decoded
    assert boxes[2:] == [[10, 10, 20, 19]]
    list(refiner.refine(stack, plane(11, rows=2), [0], [1]))  # the large one: 60 of 960 (6 % > 5 %, 240 px > 64)
    assert boxes[3:] == [[60, 60, 89, 91]]
    off = Refiner(SegmentationParams(refine=RefineParams(enabled=True, margin=0.0, max_growth=10.0, reuse_pixels=0)),
                  LiteMedSAMService("cpu", prompter_factory=Boxes))
    list(off.refine(stack, plane(8), [0], [1]))
    list(off.refine(stack, plane(9), [0], [1]))
    assert sorted(boxes[4:6]) == [[10, 10, 17, 19], [60, 60, 89, 89]]
    assert boxes[6:] == [[10, 10, 18, 19]]  # 0: the 5 % rule alone decodes it
    with pytest.raises(FewShotError):
        RefineParams(reuse_pixels=-1.0)
