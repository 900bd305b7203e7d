"""'Adapt to this scan': superpixel pseudo-classes and self-supervised steps on the user's own scan."""

import random

import numpy as np
import pytest
import torch

from napari_fewshot.core import AdaptParams, FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.adapt import pick_superpixel, superpixel_episodes, superpixels
from napari_fewshot.core.normalization import IMAGENET
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.errors import FewShotError
from napari_fewshot.io import read_volume

from shared_data import CHAOS, require


def test_superpixels_follow_regions_and_skip_air():
    grey = np.zeros((128, 128))
    grey[20:60, 20:60] = 0.8  # tissue: 9.8 % of the slice
    grey[70:120, 30:100] = 0.4  # tissue: 21 %, too big for max_fraction 0.15
    params = AdaptParams()
    segments = superpixels(grey, params)
    picks = [pick_superpixel(segments, grey, params, random.Random(seed)) for seed in range(10)]
    assert all(m is not None for m in picks)
    assert not any(m[0, 0] or m[90, 60] for m in picks)  # never the air, never the over-large region
    assert any(m[40, 40] for m in picks)  # the square's core (its blurred rim may form its own superpixels)
    assert all(params.min_fraction <= m.mean() <= params.max_fraction for m in picks)
    assert pick_superpixel(superpixels(np.zeros((64, 64)), params), np.zeros((64, 64)), params, random.Random(0)) is None


def test_episodes_are_an_augmented_copy_of_one_slice():
    rng = np.random.default_rng(0)
    volume = rng.normal(0.5, 0.05, (4, 96, 96)).clip(0, 1).astype(np.float32)
    volume[:, 30:60, 30:60] = 0.9
    stack = ImageStack(volume, "none")
    params = SegmentationParams()
    make = superpixel_episodes(stack, params, AdaptParams(), torch.device("cpu"), IMAGENET)
    x_s, t_s, x_q, t_q = make(random.Random(0))
    size = params.input_size  # a volume's slices are encoded at input_size
    assert x_s.shape == x_q.shape == (1, 3, size, size) and t_s.shape == t_q.shape == (size, size)
    assert t_s.dtype == torch.long and set(t_s.unique().tolist()) == {0, 1}
    assert not torch.equal(x_s, x_q)  # the query is augmented


def test_adapt_trains_on_the_scan_and_reset_restores():
    image = read_volume(require(CHAOS) / "image_1.nii.gz").data
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(image)
    before = {k: v.clone() for k, v in segmenter.encoder.state_dict().items()}
    reports = list(segmenter.adapt(AdaptParams(steps=3)))
    assert [r.done for r in reports] == [1, 2, 3] and all(np.isfinite(r.loss) for r in reports)
    assert "adapt" in reports[0].message and len(segmenter.cache) == 0
    changed = [k for k in before if not torch.equal(before[k], segmenter.encoder.state_dict()[k])]
    assert changed and segmenter.is_fine_tuned
    segmenter.reset_weights()
    assert all(torch.equal(before[k], v) for k, v in segmenter.encoder.state_dict().items())


def test_adapt_on_an_image_set_and_bad_settings():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (70, 90), np.uint8), rng.integers(0, 255, (100, 60), np.uint8)]
    images[0][10:40, 10:40] = 250
    images[1][50:90, 10:40] = 30
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", image_input_size=128))
    segmenter.set_image(images)
    assert len(run(segmenter.adapt(AdaptParams(steps=2)))) >= 1
    with pytest.raises(FewShotError, match="min_fraction"):
        AdaptParams(min_fraction=0.5, max_fraction=0.1)
    with pytest.raises(FewShotError, match="0 or more"):
        AdaptParams(steps=-1)


def test_augmentation_jitters_the_same_pixels_whatever_input_the_encoder_wants():
    """The episodes' photometric jitter is defined in pixel terms: an encoder fed [0, 1] pixels (LiteMedSAM)
    gets the same augmented pixels as one fed ImageNet-normalised input, only normalised its own way."""
    from napari_fewshot.core.finetune import augment
    from napari_fewshot.core.normalization import UNIT_RANGE

    pixels = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    target = (pixels[0, 0] > 0.5).long()
    out = {}
    for normalization in (IMAGENET, UNIT_RANGE):
        torch.manual_seed(0)
        image, label = augment(normalization.apply(pixels), target, random.Random(0), normalization)
        out[normalization] = (normalization.undo(image), label)
    (a, label_a), (b, label_b) = out[IMAGENET], out[UNIT_RANGE]
    assert torch.equal(label_a, label_b) and torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, pixels[:, :, :48, :40], atol=0.05)  # it did augment
