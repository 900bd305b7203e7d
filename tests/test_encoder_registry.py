"""Adding an encoder is its own code plus one registry entry: a tiny encoder defined here, registered through
the public function, works everywhere an encoder is named (segmenter, prototype banks, the CLI's help)
without any other file knowing it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.encoders import (
    Encoder, EncoderSpec, InputNormalization, available_encoders, create_encoder, encoder_spec, register_encoder,
    unregister_encoder,
)
from napari_fewshot.errors import FewShotError

# Not ImageNet's: shows that the pipeline feeds every encoder the input it declares.
TINY_INPUT = InputNormalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class TinyEncoder(Encoder):
    """Three seeded stride-2 convolutions: (B, 3, H, W) -> (B, 16, ceil(H/8), ceil(W/8)), unit length per cell.
    Remembers the smallest and largest input value it was given."""

    name = "tiny-test"
    feature_dim = 16
    weights_id = "seed-0"
    normalization = TINY_INPUT

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, 2, 1))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        self.input_range = (float("inf"), float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_range = (min(self.input_range[0], float(x.min())), max(self.input_range[1], float(x.max())))
        return F.normalize(self.net(x), dim=1)


def _build(pretrained: bool = True, weights_path=None) -> Encoder:
    return TinyEncoder()


TINY = EncoderSpec("tiny-test", _build, "a seeded three-layer conv net, for tests", TINY_INPUT, lambda: None)


@pytest.fixture
def tiny():
    """The tiny encoder, registered for one test and removed afterwards."""
    register_encoder(TINY)
    yield TINY
    unregister_encoder(TINY.name)


def square_volume() -> tuple[np.ndarray, np.ndarray]:
    """(4, 64, 64) float volume: a bright square on a darker background, and its (4, 64, 64) labels."""
    rng = np.random.default_rng(0)
    volume = rng.normal(0.2, 0.02, (4, 64, 64)).astype(np.float32)
    labels = np.zeros(volume.shape, np.int16)
    for i in range(4):
        labels[i, 16 + i:44 + i, 18:46] = 1
    volume[labels == 1] += 0.6
    return volume, labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_a_registered_encoder_segments_and_travels_in_a_bank(tiny, tmp_path):
    volume, labels = square_volume()
    params = SegmentationParams(encoder="tiny-test", device="cpu", input_size=64, modality="none")
    segmenter = FewShotSegmenter(params)
    assert isinstance(segmenter.encoder, TinyEncoder)
    segmenter.set_image(volume)
    support = np.zeros_like(labels)
    support[0] = labels[0]  # dense mode: slice 0 painted, the rest asked for
    result = run(segmenter.segment(support))
    assert all(dice(result.labels[i] == 1, labels[i] == 1) > 0.8 for i in (1, 2, 3))
    # The encoder saw its own normalisation of [0, 1] pixels: (0 - 0.5) / 0.25 to (1 - 0.5) / 0.25.
    low, high = segmenter.encoder.input_range
    assert -2.0 <= low < -1.0 and 1.0 < high <= 2.0

    bank = PrototypeBank.from_segmenter(segmenter, support, class_names={1: "square"})
    loaded = PrototypeBank.load(bank.save(tmp_path / "square.fewshot"))
    assert loaded.encoder_name == "tiny-test" and loaded.feature_dim == 16
    assert loaded.normalization["input_mean"] == [0.5] * 3 and loaded.normalization["input_std"] == [0.25] * 3
    again = loaded.segment_volume(volume, device="cpu")  # no support: the bank's prototypes only
    assert all(dice(again.labels[i] == 1, labels[i] == 1) > 0.8 for i in range(4))


def test_a_bank_refuses_an_encoder_input_other_than_its_encoders(tiny, tmp_path):
    volume, labels = square_volume()
    bank = PrototypeBank.build([(volume, np.where(np.arange(4)[:, None, None] == 0, labels, 0))],
                               SegmentationParams(encoder="tiny-test", device="cpu", input_size=64, modality="none"))
    bank.normalization["input_std"] = [0.229, 0.224, 0.225]
    with pytest.raises(FewShotError, match="another intensity normalisation"):
        PrototypeBank.load(bank.save(tmp_path / "other.fewshot"))


def test_an_encoder_without_its_weights_is_refused_with_its_own_sentence(tmp_path):
    offline = EncoderSpec("tiny-offline", _build, "the tiny encoder, weights missing", TINY_INPUT,
                          lambda: "The tiny weights are not on this machine; copy them to /nowhere.")
    register_encoder(offline)
    try:
        rng = np.random.default_rng(0)
        from napari_fewshot.core.prototypes import PrototypeSet

        vectors = F.normalize(torch.from_numpy(rng.normal(size=(2, 16)).astype(np.float32)), dim=1)
        prototypes = PrototypeSet(vectors, torch.tensor([0, 1]), torch.tensor([True, True]), [1], {0: 1, 1: 1})
        bank = PrototypeBank(prototypes, SegmentationParams(encoder="tiny-offline"), "tiny-offline", "seed-0", 16)
        with pytest.raises(FewShotError, match="tiny-offline, whose weights are not installed: The tiny weights"):
            bank.make_segmenter("cpu")
    finally:
        unregister_encoder("tiny-offline")


def test_registering_is_checked_and_undone():
    before = available_encoders()
    with pytest.raises(FewShotError, match="already registered"):
        register_encoder(EncoderSpec("efficientnet-lite0", _build, "a clash", TINY_INPUT, lambda: None))
    register_encoder(TINY)
    assert encoder_spec("tiny-test") is TINY and isinstance(create_encoder("tiny-test"), TinyEncoder)
    unregister_encoder("tiny-test")
    assert available_encoders() == before
    with pytest.raises(FewShotError, match="Unknown encoder 'tiny-test'"):
        create_encoder("tiny-test")


def test_an_entry_that_disagrees_with_its_encoder_is_caught():
    wrong = EncoderSpec("tiny-wrong", _build, "says ImageNet, is not", InputNormalization((0.485, 0.456, 0.406),
                                                                                         (0.229, 0.224, 0.225)),
                        lambda: None)
    register_encoder(wrong)
    try:
        with pytest.raises(ValueError, match="registry entry says"):
            create_encoder("tiny-wrong")
    finally:
        unregister_encoder("tiny-wrong")


def test_every_builtin_encoder_declares_its_input_and_its_weights():
    for name in available_encoders():
        spec = encoder_spec(name)
        assert isinstance(spec.normalization, InputNormalization)
        missing = spec.weights_available()
        assert missing is None or (missing.endswith(".") and "\n" not in missing)
    assert encoder_spec("litemedsam").normalization == InputNormalization((0, 0, 0), (1, 1, 1))  # [0, 1] pixels
    assert encoder_spec("efficientnet-lite0").weights_available() is None  # installed with the package


def test_the_cli_lists_a_registered_encoder(tiny, capsys):
    from napari_fewshot.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["segment", "--help"])
    assert exit_.value.code == 0
    assert "tiny-test" in capsys.readouterr().out
