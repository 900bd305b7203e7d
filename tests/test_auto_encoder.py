"""The default encoder "auto" (core/encoders resolve_encoder): EfficientNet-Lite0 for the slices of a volume,
EfficientNet-Lite0 with LiteMedSAM for 2D images and image sets (BENCHMARKS.md, sessions 26-27), resolved when the
segmenter learns its image; a fine-tuned encoder is never swapped; banks record the encoder that ran."""

import numpy as np
import pytest
import skimage.data

from napari_fewshot.cli_options import encoder_help
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, encoder_choices, run
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.encoders import AUTO, available_encoders, resolve_encoder
from napari_fewshot.core.encoders.combined import LITE0_LITEMEDSAM
from napari_fewshot.core.stack import ImageStack

LITE0 = "efficientnet-lite0"


def _photographs() -> list[np.ndarray]:
    """Two real grey photographs of different sizes (an image set)."""
    coins = skimage.data.coins()[:160, :200]
    return [coins, np.ascontiguousarray(coins[10:150, 20:190])]


def test_auto_is_the_default_and_stands_for_lite0_on_volumes_and_the_combined_encoder_on_2d_images():
    params = SegmentationParams()
    assert params.encoder == AUTO and encoder_choices()[0] == AUTO and AUTO not in available_encoders()
    volume = ImageStack(np.zeros((4, 40, 40), np.float32))
    assert volume.is_3d and params.encoder_for(volume) == LITE0
    for two_d in (ImageStack(_photographs()), ImageStack(np.zeros((40, 40), np.float32)),
                  ImageStack(np.zeros((1, 40, 40), np.float32))):
        assert not two_d.is_3d and params.encoder_for(two_d) == LITE0_LITEMEDSAM
    # the centred grid is lite0's only; an explicit name is kept on every image
    assert SegmentationParams(feature_grid="centred").encoder_for(ImageStack(_photographs())) == LITE0
    assert SegmentationParams(encoder="litemedsam").encoder_for(volume) == "litemedsam"
    assert resolve_encoder("vgg16-panet", True) == "vgg16-panet"
    assert encoder_help().startswith(f"auto (default): {LITE0} for volumes, {LITE0_LITEMEDSAM} for 2D images")


def test_the_segmenter_follows_the_image_and_keeps_a_fine_tuned_encoder():
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    assert segmenter.encoder_name == LITE0  # nothing built, nothing loaded before an image
    segmenter.set_image(_photographs())
    assert segmenter.encoder_name == LITE0_LITEMEDSAM and segmenter.encoder.name == LITE0_LITEMEDSAM
    assert segmenter.cache.encoder is segmenter.encoder
    segmenter.set_image(np.repeat(skimage.data.coins()[None, :96, :96], 3, axis=0))
    assert segmenter.encoder_name == LITE0 and segmenter.encoder.name == LITE0
    # weights changed (a bank's, Fine-tune's): the user's work is kept, not swapped for the other encoder
    segmenter.load_encoder_state(segmenter.encoder.state_dict(), tag="bank")
    segmenter.set_image(_photographs())
    assert segmenter.encoder_name == LITE0 and segmenter.is_fine_tuned


def test_a_bank_made_with_auto_records_the_encoder_that_ran():
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    images = _photographs()
    segmenter.set_image(images)
    support = [np.zeros(image.shape, np.uint8) for image in images]
    support[0][40:80, 40:80] = 1  # one coin-sized square on the first photograph
    bank = PrototypeBank.from_segmenter(segmenter, support)
    assert bank.encoder_name == LITE0_LITEMEDSAM and bank.params.encoder == LITE0_LITEMEDSAM
    assert bank.make_segmenter("cpu").encoder_name == LITE0_LITEMEDSAM
    result = run(segmenter.segment(support))
    assert result.labels[1].shape == images[1].shape


@pytest.mark.parametrize("grid", ["centred"])
def test_auto_on_the_centred_grid_builds_lite0_for_images_too(grid):
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", feature_grid=grid))
    segmenter.set_image(_photographs())
    assert segmenter.encoder_name == LITE0 and segmenter.encoder.grid == grid


@pytest.mark.gui
def test_loading_a_bank_switches_the_encoder_setting_only_when_auto_would_not_give_the_bank_s(qapp):
    from types import SimpleNamespace

    from napari_fewshot.plugin import IMAGE_SET_KEY
    from napari_fewshot.plugin.banks import use_encoder_of

    choices = tuple(encoder_choices())
    image_set = SimpleNamespace(data=np.zeros((5, 40, 50)), rgb=False, metadata={IMAGE_SET_KEY: 1})
    volume = SimpleNamespace(data=np.zeros((5, 40, 50)), rgb=False, metadata={})
    photograph = SimpleNamespace(data=np.zeros((40, 50, 3)), rgb=True, metadata={})
    for image, bank_encoder, kept in ((image_set, LITE0_LITEMEDSAM, True), (photograph, LITE0_LITEMEDSAM, True),
                                      (volume, LITE0, True), (volume, LITE0_LITEMEDSAM, False),
                                      (image_set, LITE0, False)):
        choice = SimpleNamespace(value=AUTO, choices=choices)
        use_encoder_of(SimpleNamespace(encoder_name=bank_encoder), choice, image, "native")
        assert choice.value == (AUTO if kept else bank_encoder)
