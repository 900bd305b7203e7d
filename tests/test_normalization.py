import numpy as np
import pytest
import torch

from napari_fewshot.core.normalization import (
    CT_WINDOW_HU, IMAGENET, UNIT_RANGE, InputNormalization, guess_modality, intensity_window, resized_shape,
    to_encoder_input,
)


def test_modality_guesses():
    assert guess_modality(np.zeros((2, 4, 4), np.uint8)) == "us"
    ct = np.full((2, 4, 4), -1024, np.int16)
    ct[0, 0, 0] = 300
    assert guess_modality(ct) == "ct"
    assert guess_modality(np.random.default_rng(0).random((2, 4, 4)).astype(np.float32) * 800) == "mr"


def test_ct_window_maps_hounsfield_units():
    window = intensity_window(np.array([[[-1024, 40, 2000]]], np.int16), "auto")
    assert (window.low, window.high, window.modality) == (*CT_WINDOW_HU, "ct")
    out = window.apply(np.array([-1024, 50, 2000]))
    assert out.tolist() == [0.0, 0.5, 1.0]


def test_mr_window_is_per_volume_percentiles_and_survives_nan_and_constants():
    data = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(1, 100, 100)
    data[0, 0, :5] = np.nan
    window = intensity_window(data, "mr")
    assert 0 < window.low < 10 and 990 < window.high < 1000
    out = window.apply(data)
    assert np.isfinite(out).all() and out.min() == 0 and out.max() == 1
    constant = intensity_window(np.full((2, 8, 8), 7.0, np.float32), "mr")
    assert np.allclose(constant.apply(np.full((8, 8), 7.0)), 0.5)


def test_encoder_input_is_normalised_as_the_encoder_says_and_resized():
    x = to_encoder_input(np.zeros((2, 100, 50), np.float32), 256, IMAGENET)
    assert x.shape == (2, 3, 256, 128)
    assert torch.allclose(x[0, :, 0, 0], -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]),
                          atol=1e-5)
    pixels = np.random.default_rng(0).random((1, 40, 40)).astype(np.float32)
    assert torch.equal(to_encoder_input(pixels, None, UNIT_RANGE)[0, 1], torch.from_numpy(pixels[0]))
    assert resized_shape(10, 12, None) == (32, 32)


def test_input_normalisation_undoes_itself_and_refuses_nonsense():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(IMAGENET.undo(IMAGENET.apply(x)), x, atol=1e-6)
    assert InputNormalization([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == InputNormalization((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="positive"):
        InputNormalization((0, 0, 0), (1, 0, 1))
