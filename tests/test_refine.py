"""Refine (core/refine.py): LiteMedSAM redraws the components the prototypes found."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, dice, run
from napari_fewshot.core.refine import Refiner, refine_plane
from napari_fewshot.core.sam_prompt import PlaneEmbedding
from napari_fewshot.core.sam_service import EMBEDDING_BYTES, LiteMedSAMService
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.errors import FewShotError


@pytest.fixture(scope="module")
def prompter():
    from napari_fewshot.core.sam_prompt import BoxPrompter

    return BoxPrompter()


@pytest.fixture(scope="module")
def busi_pair():
    """Two real BUSI images (H, W) float in [0, 1] with their lesion masks."""
    from shared_data import BUSI, require

    from napari_fewshot.io import read_busi_mask, read_volume

    out = []
    for name in ("benign/benign (3).png", "benign/benign (10).png"):
        path = require(BUSI) / name
        image = read_volume(path).data[0].astype(np.float32)
        image = image.mean(-1) if image.ndim == 3 else image
        out.append(((image - image.min()) / (image.max() - image.min()), read_busi_mask(path)))
    return out


def blocky(mask: np.ndarray, block: int = 24, grow: int = 12) -> np.ndarray:
    """A deliberately coarse prediction: the mask on a block grid, dilated."""
    h, w = mask.shape
    small = mask[: h - h % block, : w - w % block].reshape(h // block, block, w // block, block).mean((1, 3)) > 0.3
    coarse = np.zeros_like(mask)
    coarse[: h - h % block, : w - w % block] = small.repeat(block, 0).repeat(block, 1)
    return ndimage.binary_dilation(coarse, iterations=grow)


def test_refine_draws_a_coarse_lesion_mask_towards_the_reference(busi_pair, prompter):
    params = RefineParams(enabled=True)
    for image, reference in busi_pair:
        coarse = blocky(reference)
        embedding = prompter.embed(image)
        refined = refine_plane(coarse.astype(np.uint8), [1], lambda b, m: prompter.decode(embedding, b, m), params)
        before, after = dice(coarse, reference), dice(refined == 1, reference)
        assert refined.dtype == np.uint8 and refined.shape == reference.shape
        assert after > before + 0.05 and after > 0.85, (before, after)


def _never(boxes, masks):
    raise AssertionError("nothing to refine, so nothing may be decoded")


def test_an_empty_prediction_stays_empty_and_decodes_nothing():
    labels = np.zeros((40, 50), np.uint8)
    out = refine_plane(labels, [1, 2], _never, RefineParams())
    assert out is labels and not out.any()
    tiny = labels.copy()
    tiny[3:5, 3:5] = 2  # below RefineParams.min_pixels: kept as it is, never prompted
    assert np.array_equal(refine_plane(tiny, [1, 2], _never, RefineParams()), tiny)


def _square(shape, y0, y1, x0, x1, value=1.0):
    out = np.zeros(shape, np.float32)
    out[y0:y1, x0:x1] = value
    return out


def test_overlapping_classes_go_to_the_more_probable_and_implausible_decodes_keep_the_coarse_mask():
    labels = np.zeros((60, 60), np.uint8)
    labels[10:30, 10:30] = 3  # class 3
    labels[30:50, 30:50] = 7  # class 7
    labels[52:58, 5:20] = 3  # a second class-3 component: its decode comes back empty

    def decode(boxes, masks):
        assert len(boxes) == 3 and masks is None
        out = []
        for x0, y0, x1, y1 in boxes:
            if y0 > 45:  # the second class-3 component
                out.append(np.zeros((60, 60), np.float32))
            elif x0 < 20:  # class 3 grows towards class 7's corner ...
                out.append(_square((60, 60), 10, 36, 10, 36, 0.7))
            else:  # ... where class 7 is more probable
                out.append(_square((60, 60), 28, 50, 28, 50, 0.9))
        return np.stack(out)

    out = refine_plane(labels, [3, 7], decode, RefineParams(margin=0.2))
    assert labels[12, 32] == 0 and out[12, 32] == 3  # class 3's decode replaced the component, grown
    assert out[29, 29] == 7 and out[31, 31] == 7  # overlap: class 7 (0.9) beats class 3 (0.7)
    assert out[45, 45] == 7 and out[15, 15] == 3
    assert (out[52:58, 5:20] == 3).all()  # the empty decode kept the coarse component

    def huge(boxes, masks):  # every decode covers the whole box and beyond: far larger than a thin component
        return np.ones((len(boxes), 60, 60), np.float32)

    thin = np.zeros((60, 60), np.uint8)
    for t in range(10, 50):
        thin[t, t:t + 2] = 1  # a diagonal sliver: its box is far larger than it
    assert np.array_equal(refine_plane(thin, [1], huge, RefineParams(margin=0.2)), thin)


class CountingPrompter:
    """A stand-in for BoxPrompter: counts embeddings, decodes each box as itself; its "mask decoder" is a
    small linear layer (weights to swap)."""

    weights_id = "fake"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.embedded = []
        self.calls = 0  # decoder calls (each may hold several planes' boxes)
        self.model = torch.nn.Module()
        self.model.mask_decoder = torch.nn.Linear(2, 2)

    def decode_batch(self, requests, max_prompts=32):
        self.calls += 1
        return [(self.decode(e, b, m), np.ones(len(b), np.float32)) for e, b, m in requests]

    def embed(self, plane):
        self.embedded.append(float(plane.sum()))
        return PlaneEmbedding(torch.zeros(1, 256, 64, 64), tuple(plane.shape[:2]), 256 / max(plane.shape[:2]))

    def decode(self, embedding, boxes, masks=None):
        out = np.zeros((len(boxes), *embedding.shape), np.float32)
        for n, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
            out[n, y0:y1 + 1, x0:x1 + 1] = 0.9
        return out


def test_embeddings_are_computed_once_per_slice_and_never_reused_for_another_image(tmp_path):
    params = SegmentationParams(refine=RefineParams(enabled=True), cache_dir=str(tmp_path))
    made = []
    service = LiteMedSAMService("cpu", 1 << 30, tmp_path, lambda device: made.append(CountingPrompter(device)) or made[-1])
    refiner = Refiner(params, service)
    volume = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    labels = [np.zeros((32, 32), np.uint8) for _ in range(4)]
    for i in (0, 2, 3):
        labels[i][8:20, 8:20] = 1
    stack = ImageStack(volume)
    assert not made  # the prompter is made on first use only
    reports = list(refiner.refine(stack, [x.copy() for x in labels], range(4), [1]))
    assert [r.done for r in reports] == [1, 2, 3, 4] and "refined" in reports[-1].message
    list(refiner.refine(stack, [x.copy() for x in labels], range(4), [1]))
    assert len(made) == 1 and len(made[0].embedded) == 3  # slices 0, 2, 3 once each; slice 1 had nothing
    other = ImageStack(np.random.default_rng(5).random((4, 32, 32)).astype(np.float32))
    list(refiner.refine(other, [x.copy() for x in labels], range(4), [1]))
    assert len(made[0].embedded) == 6  # a new image: its own embeddings
    flipped = ImageStack(volume[::-1].copy())  # slices 0, 2, 3 are the first image's 3, 1, 0 (same window)
    list(refiner.refine(flipped, [x.copy() for x in labels], range(4), [1]))
    assert len(made[0].embedded) == 7  # embeddings are named by the windowed pixels: only old slice 1 is new
    fresh = Refiner(params, LiteMedSAMService("cpu", 1 << 30, tmp_path, CountingPrompter))
    list(fresh.refine(stack, [x.copy() for x in labels], range(4), [1]))
    assert fresh.service.computed == 0 and fresh.service.prompter.embedded == []  # read back from cache_dir


def test_the_embedding_cache_keeps_to_its_budget():
    cache = LiteMedSAMService("cpu", budget_bytes=2 * EMBEDDING_BYTES, prompter_factory=CountingPrompter)
    stack = ImageStack(np.random.default_rng(1).random((3, 16, 16)).astype(np.float32))
    for i in (0, 1, 2, 0):
        cache.embedding_of(stack, i)
    assert len(cache) == 2 and cache.computed == 4  # slice 0 was dropped for slice 2, then computed again


def test_refine_settings_are_checked():
    for bad in ({"enabled": "yes"}, {"margin": -0.1}, {"min_pixels": 0}, {"max_growth": 1.0}):
        with pytest.raises(FewShotError):
            RefineParams(**bad)
    with pytest.raises(FewShotError, match="RefineParams"):
        SegmentationParams(refine=True)  # the grouped settings, not a flag


def test_segment_with_refine_returns_labels_of_the_right_shape_and_type(chaos_case):
    volume, reference = chaos_case
    crop = slice(18, 24)
    volume, reference = volume[crop], reference[crop]
    support = np.zeros(reference.shape, np.uint8)
    support[[0, 5]] = np.where(np.isin(reference[[0, 5]], (1, 2)), reference[[0, 5]], 0)
    results = {}
    for refine in (False, True):
        segmenter = FewShotSegmenter(SegmentationParams(refine=RefineParams(enabled=refine), input_size=256))
        segmenter.set_image(volume)
        messages = []
        results[refine] = run(segmenter.segment(support), lambda p: messages.append(p.message)).labels
        assert any("refined" in m for m in messages) == refine
    assert results[True].shape == reference.shape and results[True].dtype == results[False].dtype
    assert set(np.unique(results[True])) <= {0, 1, 2}
    for organ in (1, 2):
        inner = slice(1, 5)
        assert dice(results[True][inner] == organ, reference[inner] == organ) > 0.7


def test_only_the_largest_components_are_prompted():
    labels = np.zeros((80, 80), np.uint8)
    for n, side in enumerate((9, 12, 15, 18, 21)):  # five components of class 1, 81 to 441 pixels
        labels[2 + 15 * n: 2 + 15 * n + min(side, 13), 2: 2 + side] = 1
    seen = []

    def decode(boxes, masks):
        seen.append(len(boxes))
        return np.zeros((len(boxes), 80, 80), np.float32)  # empty: every component is kept

    out = refine_plane(labels, [1], decode, RefineParams(max_components=3))
    assert seen == [3] and np.array_equal(out, labels)


@pytest.mark.refine_default
def test_the_default_refines_image_sets_and_volumes_everywhere():
    images, volume = ImageStack([np.zeros((20, 30)), np.ones((25, 20))]), ImageStack(np.zeros((4, 20, 20)))
    auto = SegmentationParams().refine
    assert auto.enabled is None and auto.enabled_for(images, "cpu") and auto.enabled_for(images)
    assert auto.enabled_for(volume, "cpu") and auto.enabled_for(volume)  # the widget streams it in (core/refinement.py)
    assert auto.enabled_for(volume, torch.device("cuda", 0))
    assert not RefineParams(enabled=False).enabled_for(volume, "cpu")
    assert not RefineParams(enabled=False).enabled_for(images, "cuda")
    assert RefineParams(enabled=True).enabled_for(volume, "cpu")


def test_a_slice_whose_coarse_labels_did_not_change_is_not_decoded_again():
    """After a correction most slices come out of matching unchanged: re-segmenting must not decode them."""
    class CountingDecodes(CountingPrompter):
        decoded = 0

        def decode(self, embedding, boxes, masks=None):
            CountingDecodes.decoded += 1
            return super().decode(embedding, boxes, masks)

    service = LiteMedSAMService("cpu", prompter_factory=CountingDecodes)
    refiner = Refiner(SegmentationParams(refine=RefineParams(enabled=True)), service)
    stack = ImageStack(np.random.default_rng(1).random((3, 32, 32)).astype(np.float32))
    labels = [np.zeros((32, 32), np.uint8) for _ in range(3)]
    for plane in labels:
        plane[8:20, 8:20] = 1
    first = [x.copy() for x in labels]
    list(refiner.refine(stack, first, range(3), [1]))
    assert CountingDecodes.decoded == 3
    labels[1][20:24, 8:20] = 1  # matching changed slice 1 only
    again = [x.copy() for x in labels]
    list(refiner.refine(stack, again, range(3), [1]))
    assert CountingDecodes.decoded == 4  # slice 1 decoded again, slices 0 and 2 reused
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[2], first[2])
    refiner.params = SegmentationParams(refine=RefineParams(enabled=True, margin=0.3))
    list(refiner.refine(stack, [x.copy() for x in labels], range(3), [1]))
    assert CountingDecodes.decoded == 7  # another setting: every slice again


def test_a_component_whose_box_did_not_change_is_not_decoded_again_and_refines_as_a_fresh_decode():
    """A correction changes most slices' coarse labels by a few pixels inside their components: the box, and so
    the decode, is the same; its kept probabilities give the labels a fresh decode gives."""
    class CountingBoxes(CountingPrompter):
        boxes = 0

        def decode(self, embedding, boxes, masks=None):
            CountingBoxes.boxes += len(boxes)
            out = super().decode(embedding, boxes, masks)
            out[:, ::3] *= 0.4  # stripes: the outcome depends on the probabilities, not only on the box
            return out

    params = SegmentationParams(refine=RefineParams(enabled=True, max_growth=10.0))
    refiner = Refiner(params, LiteMedSAMService("cpu", prompter_factory=CountingBoxes))
    stack = ImageStack(np.random.default_rng(3).random((2, 40, 40)).astype(np.float32))
    labels = [np.zeros((40, 40), np.uint8) for _ in range(2)]
    labels[0][5:25, 5:25] = 1
    labels[0][28:36, 28:36] = 2
    labels[1][10:30, 10:30] = 1
    list(refiner.refine(stack, [x.copy() for x in labels], range(2), [1, 2]))
    assert CountingBoxes.boxes == 3
    labels[0][10:14, 10:14] = 0  # inside the liver's box: its box stays, the slice's digest changes
    labels[1][10:31, 10:31] = 1  # slice 1's box grows: decoded again
    again = [x.copy() for x in labels]
    list(refiner.refine(stack, again, range(2), [1, 2]))
    assert CountingBoxes.boxes == 4  # slice 1's new box only; slice 0's two boxes reused
    fresh = Refiner(params, LiteMedSAMService("cpu", prompter_factory=CountingBoxes))
    expected = [x.copy() for x in labels]
    list(fresh.refine(stack, expected, range(2), [1, 2]))
    assert CountingBoxes.boxes == 7
    assert all(np.array_equal(a, b) for a, b in zip(again, expected))
    small = Refiner(params, LiteMedSAMService("cpu", prompter_factory=CountingBoxes))
    small.boxes.budget = 0  # nothing kept: every changed slice decoded again
    list(small.refine(stack, [x.copy() for x in labels], range(2), [1, 2]))
    labels[0][10:14, 10:14] = 1
    list(small.refine(stack, [x.copy() for x in labels], range(2), [1, 2]))
    assert CountingBoxes.boxes == 12 and small.boxes.nbytes == 0
