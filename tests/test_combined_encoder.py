"""The combined encoder (core/encoders/combined.py): EfficientNet-Lite0 and LiteMedSAM side by side, each cell's
cosine the mean of the two encoders' cosines; built on the segmenter's LiteMedSAM service like ``litemedsam``."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from napari_fewshot.core import FewShotSegmenter, SegmentationParams
from napari_fewshot.core.encoders import available_encoders, create_encoder
from napari_fewshot.core.encoders.combined import LITE0_LITEMEDSAM, CombinedEncoder
from napari_fewshot.core.normalization import UNIT_RANGE, to_encoder_input
from napari_fewshot.errors import FewShotError


def _pixels() -> torch.Tensor:
    """(2, 3, 120, 88) pixels in [0, 1]: a real photograph and its mirror image."""
    x = to_encoder_input(skimage.data.camera()[None, 200:320, 180:268] / 255.0, None, UNIT_RANGE)
    return torch.cat([x, x.flip(-1)])


def test_the_combined_cosine_is_the_mean_of_the_two_encoders_cosines():
    combined = create_encoder(LITE0_LITEMEDSAM)
    assert LITE0_LITEMEDSAM in available_encoders()
    assert combined.feature_dim == 792 and combined.normalization == UNIT_RANGE
    lite0, litemedsam = combined.parts
    pixels = _pixels()
    with torch.no_grad():
        features = combined(pixels)
        # each part fed the input it was trained on: ImageNet's normalisation for lite0, none for LiteMedSAM
        a = F.normalize(create_encoder("efficientnet-lite0")(lite0.normalization.apply(pixels)), dim=1)
        b = create_encoder("litemedsam")(pixels)
    assert features.shape == (2, 792, 15, 11)
    assert torch.allclose(features.norm(dim=1), torch.ones(2, 15, 11), atol=1e-4)
    cells = features.flatten(2)  # (2, 792, 165)
    cosine = torch.einsum("cn,cm->nm", cells[0], cells[1])
    mean = 0.5 * (torch.einsum("cn,cm->nm", a[0].flatten(1), a[1].flatten(1))
                  + torch.einsum("cn,cm->nm", b[0].flatten(1), b[1].flatten(1)))
    assert torch.allclose(cosine, mean, atol=1e-4)
    # the two encoders see the photograph differently, so the mean is neither one's cosine
    lite0_only = torch.einsum("cn,cm->nm", a[0].flatten(1), a[1].flatten(1))
    assert (cosine - lite0_only).abs().max() > 0.05


def test_weights_must_be_positive_and_sum_to_one():
    parts = [create_encoder("efficientnet-lite0", pretrained=False), create_encoder("vgg16-panet", pretrained=False)]
    with pytest.raises(ValueError, match="sum to 1"):
        CombinedEncoder(parts, (0.5, 0.6), "x")
    with pytest.raises(ValueError, match="two or more"):
        CombinedEncoder(parts[:1], (1.0,), "x")
    with pytest.raises(FewShotError, match="--weights is not used"):
        create_encoder(LITE0_LITEMEDSAM, weights_path="some.pth")
    with pytest.raises(FewShotError, match="no 'centred' feature grid"):
        FewShotSegmenter(SegmentationParams(encoder=LITE0_LITEMEDSAM, feature_grid="centred"))


def test_the_combined_encoder_reads_litemedsam_once_with_refinement_and_fine_tunes_a_copy():
    segmenter = FewShotSegmenter(SegmentationParams(encoder=LITE0_LITEMEDSAM))
    assert not segmenter.sam.loaded  # building the segmenter loads nothing
    encoder = segmenter.encoder
    sam = segmenter.sam
    assert sam.loads == 1 and sam.weights_id in encoder.weights_id
    part = encoder.parts[1].layers[2].blocks[0].attn.qkv.weight
    tinyvit = sam.model.image_encoder.layers[2].blocks[0].attn.qkv.weight
    assert torch.equal(part, tinyvit)
    with torch.no_grad():
        part.add_(1.0)  # as fine-tuning would
    assert not torch.equal(part, tinyvit)


def test_segmenting_with_the_combined_encoder_draws_the_painted_object_on_another_image():
    """Two real photographs of the same coins, shifted: the coins painted on one are found on the other; Fine-tune's
    whole-encoder method trains both parts and leaves the LiteMedSAM that refinement and boxes use as it was."""
    import skimage.filters

    from napari_fewshot.core import FineTuneParams, RefineParams, run

    image = skimage.data.coins()[:160, :240].astype(np.float32)
    images = [image, np.roll(image, (6, 10), (0, 1))]  # an image set of two
    truth = np.zeros(image.shape, bool)
    truth[10:75, 45:100] = skimage.filters.threshold_otsu(image) < image[10:75, 45:100]  # the coins up there
    support = [truth.astype(np.uint8), np.zeros(image.shape, np.uint8)]
    params = SegmentationParams(encoder=LITE0_LITEMEDSAM, device="cpu",
                                refine=RefineParams(enabled=False, select=False))
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(images)
    result = run(segmenter.segment(support))
    moved = np.roll(truth, (6, 10), (0, 1))
    drawn = np.asarray(result.labels[1]) == 1
    assert (drawn & moved).sum() / max(1, (drawn | moved).sum()) > 0.4
    tinyvit = segmenter.sam.model.image_encoder.layers[2].blocks[0].attn.qkv.weight.clone()
    lite0_before = segmenter.encoder.parts[0]._conv_stem.weight.clone()
    losses = run(segmenter.fine_tune(support, FineTuneParams(method="encoder", steps=1)))
    assert len(losses) == 1 and np.isfinite(losses).all() and segmenter.encoder_changed
    assert not torch.equal(segmenter.encoder.parts[0]._conv_stem.weight, lite0_before)
    assert torch.equal(segmenter.sam.model.image_encoder.layers[2].blocks[0].attn.qkv.weight, tinyvit)
