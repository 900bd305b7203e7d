"""A bank keeps what Fine-tune's cheap methods adapted (the feature adapter, LiteMedSAM decoder weights): saved as
adapter/ and decoder/ entries, restored when the bank is applied; banks without them (schema 2 included) load as before."""

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, FineTuneParams, SegmentationParams, run
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.bank_format import read_bank

SCHEMA2 = Path(__file__).resolve().parent / "data" / "bank_schema2_main.fewshot"


@pytest.fixture(scope="module")
def adapted(chaos_case):
    """A segmenter with a feature adapter trained on 3 signed liver slices, its support and the scan."""
    image, labels = chaos_case
    lo = int(np.nonzero((labels == 1).any((1, 2)))[0].min())
    image, labels = image[lo:lo + 8], labels[lo:lo + 8]
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", input_size=128))
    segmenter.set_image(image)
    support = np.zeros(labels.shape, np.uint8)
    support[[1, 3, 5]] = labels[[1, 3, 5]] == 1
    run(segmenter.fine_tune(support, FineTuneParams(method="adapter", adapter_steps=3)))
    assert segmenter.cache.adapter is not None
    return segmenter, support, image


def test_a_bank_saves_the_adapter_and_applying_it_restores_it(adapted, tmp_path):
    segmenter, support, image = adapted
    bank = PrototypeBank.from_segmenter(segmenter, support)
    assert not bank.fine_tuned  # the encoder itself was not changed: no encoder weights in the file
    assert set(bank.adapted) == {"adapter/scale", "adapter/bias"}
    path = bank.save(tmp_path / "adapted.fewshot")
    meta, arrays = read_bank(path)
    assert meta["schema_version"] == 3 and "adapter/scale" in arrays and not any(k.startswith("encoder/") for k in arrays)
    loaded = PrototypeBank.load(path)
    assert loaded.signature == bank.signature
    fresh = FewShotSegmenter(loaded.segmentation_params("cpu"))
    fresh.set_image(image)
    assert not loaded.is_prepared(fresh)
    result = run(loaded.segment(fresh))  # prepares the segmenter: the adapter goes onto its feature cache
    assert loaded.is_prepared(fresh) and fresh.cache.adapter is not None
    assert torch.allclose(fresh.cache.adapter.scale, segmenter.cache.adapter.scale)
    # the same adapted features; two segmenters' raw features differ in the last bits (float16 cache, ~6e-5)
    assert torch.allclose(fresh.cache.get(2), segmenter.cache.get(2), atol=1e-3)
    assert not torch.allclose(fresh.cache.get(2), fresh.cache.get_raw(2), atol=1e-3)  # and they are adapted
    assert result.labels.shape == image.shape
    assert fresh.adaptation.summary == "Loaded the feature adapter a bank adapted"
    plain = PrototypeBank.from_segmenter(_plain(image), support)
    assert plain.adapted is None
    plain.prepare(fresh)  # a bank made without an adapter takes the adapter away
    assert fresh.cache.adapter is None and not fresh.adaptation.changed


def _plain(image):
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", input_size=128))
    segmenter.set_image(image)
    return segmenter


def test_a_schema2_bank_still_loads_with_nothing_adapted():
    bank = PrototypeBank.load(SCHEMA2)
    assert bank.schema_version == 2 and bank.adapted is None
