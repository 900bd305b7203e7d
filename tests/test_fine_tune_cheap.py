"""Fine-tune's cheap methods (core/finetune.Adaptation): a feature adapter on the cached features and a few
LiteMedSAM decoder weights, trained on the signed slices with no encoder pass; Reset weights removes both."""

import random

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, FineTuneParams, SegmentationParams, run
from napari_fewshot.core.decoder_tuning import TUNED, jittered_box, tune_decoder
from napari_fewshot.core.feature_adapter import FeatureAdapter
from napari_fewshot.errors import FewShotError


@pytest.mark.parametrize("form", ["scale", "projection"])
def test_an_untrained_adapter_is_the_identity_and_its_state_round_trips(form):
    features = torch.randn(8, 5, 6)
    adapter = FeatureAdapter(8, form)
    assert torch.equal(adapter(features), features) and adapter(features[None]).shape == (1, 8, 5, 6)
    with torch.no_grad():
        next(adapter.parameters()).normal_()
    again = FeatureAdapter.from_state(adapter.state_dict())
    assert again.form == form and again.channels == 8
    assert torch.allclose(again(features), adapter(features)) and not torch.allclose(again(features), features)


def test_the_method_is_checked():
    with pytest.raises(FewShotError, match="not 'everything'"):
        FineTuneParams(method="everything")
    with pytest.raises(FewShotError, match="not 'conv'"):
        FineTuneParams(adapter_form="conv")
    with pytest.raises(FewShotError, match="not 'all'"):
        FineTuneParams(decoder_tuned="all")
    with pytest.raises(FewShotError, match="not 'slices'"):
        FineTuneParams(decoder_held_out="slices")


def liver_crop(chaos_case, slices: int, painted: list[int]):
    """The CHAOS case's first `slices` slices from the liver's top, a segmenter (input 128) with them, and the liver
    painted on slices `painted` of the crop: (segmenter, (S, H, W) uint8 support)."""
    image, labels = chaos_case
    lo = int(np.nonzero((labels == 1).any((1, 2)))[0].min())
    image, labels = image[lo:lo + slices], labels[lo:lo + slices]
    segmenter = FewShotSegmenter(SegmentationParams(input_size=128))
    segmenter.set_image(image)
    support = np.zeros(labels.shape, np.uint8)
    support[painted] = labels[painted] == 1
    return segmenter, support


@pytest.fixture()
def liver(chaos_case):
    return liver_crop(chaos_case, 8, [1, 5])


def test_the_adapter_trains_on_cached_features_and_reset_removes_it_without_an_encoder_pass(liver, monkeypatch):
    segmenter, support = liver
    run(segmenter.compute_features())
    calls = []
    forward = segmenter.encoder.forward
    monkeypatch.setattr(segmenter.encoder, "forward", lambda x: calls.append(x.shape) or forward(x))
    generation = segmenter.cache.generation
    reports = list(segmenter.fine_tune(support, FineTuneParams(method="adapter", adapter_steps=4),
                                       empty_slices=[7]))
    assert [r.done for r in reports] == [1, 2, 3, 4] and all(np.isfinite(r.loss) for r in reports)
    assert segmenter.is_fine_tuned and segmenter.cache.generation > generation
    channels = segmenter.cache.get_raw(3).shape[0]
    assert segmenter.adaptation.summary == f"Adapted the feature adapter ({2 * channels} weights) on 3 signed slices"
    assert not torch.allclose(segmenter.cache.get(3), segmenter.cache.get_raw(3))
    result = run(segmenter.segment(support))
    assert result.labels.shape == support.shape and (result.labels[[2, 3, 4]] == 1).any()
    segmenter.reset_weights()
    assert not segmenter.is_fine_tuned and segmenter.cache.adapter is None
    assert torch.equal(segmenter.cache.get(3), segmenter.cache.get_raw(3))
    assert calls == []  # neither training, re-segmenting nor reset ran the encoder


def test_a_cancelled_adapter_changes_nothing(liver):
    segmenter, support = liver
    job = segmenter.fine_tune(support, FineTuneParams(method="adapter", adapter_steps=50), empty_slices=[7])
    while next(job).done < 1:
        pass  # the features of the signed slices come first
    job.close()  # what a UI's cancel does
    assert not segmenter.is_fine_tuned and segmenter.cache.adapter is None


def test_a_jittered_box_holds_the_mask_grown_and_inside_the_plane():
    mask = np.zeros((60, 80), bool)
    mask[20:30, 30:50] = True
    rng = random.Random(0)
    for _ in range(20):
        x0, y0, x1, y1 = jittered_box(mask, rng, 0.5)
        assert 0 <= x0 <= 32 and 0 <= y0 <= 21 and 47 <= x1 <= 79 and 28 <= y1 <= 59


@pytest.fixture(scope="module")
def busi_set():
    from shared_data import BUSI, require

    from napari_fewshot.io import read_busi_mask, read_volume

    paths = [require(BUSI) / "benign" / f"benign ({n}).png" for n in (3, 10, 12)]
    return [read_volume(p).data[0] for p in paths], [read_busi_mask(p) for p in paths]


def test_decoder_tuning_returns_a_state_and_leaves_the_decoder_as_it_was(busi_set):
    from napari_fewshot.core.sam_prompt import BoxPrompter
    from napari_fewshot.core.stack import ImageStack

    images, masks = busi_set
    prompter = BoxPrompter()
    stack = ImageStack(images[:2], "us")
    examples = [(prompter.embed(stack.slice(i)), masks[i]) for i in range(2)]
    before = {k: v.clone() for k, v in prompter.model.mask_decoder.state_dict().items()}
    params = FineTuneParams(decoder_steps=3, decoder_batch=2, decoder_boxes=4, decoder_learning_rate=1e-1)
    job = tune_decoder(prompter, examples, params)
    reports = []
    try:
        while True:
            reports.append(next(job))
    except StopIteration as stop:
        state, losses, kept = stop.value
    # the boxes of each object decoded once (done 0), then one report per step
    assert [r.done for r in reports] == [0, 0, 1, 2, 3] and len(losses) == 3 and np.isfinite(losses).all()
    changed = {k for k in before if not torch.equal(before[k], state[k])}
    # the default: the bias of the hypernetwork's last layer (32 weights), or nothing when no step was kept
    assert changed == ({TUNED + "layers.2.bias"} if kept else set())
    assert kept in (0, 3)  # the held-out boxes are checked at the last step
    assert all(torch.equal(v, before[k]) for k, v in prompter.model.mask_decoder.state_dict().items())


def test_cached_activations_give_the_decoders_own_logits(busi_set):
    """The hypernetwork on the cached mask token times the cached upscaled embedding is the decoder's own
    output, pooled: what is trained on is what refinement decodes."""
    import random

    import torch.nn.functional as F

    from napari_fewshot.core.decoder_tuning import POOL, decoder_activations, _frozen_part
    from napari_fewshot.core.sam_prompt import BoxPrompter
    from napari_fewshot.core.stack import ImageStack

    images, masks = busi_set
    prompter = BoxPrompter()
    embedding = prompter.embed(ImageStack(images[:1], "us").slice(0))
    decoder, prompt_encoder = prompter.model.mask_decoder, prompter.model.prompt_encoder
    boxes = torch.tensor([[20.0, 30.0, 120.0, 140.0], [60.0, 50.0, 200.0, 180.0]])
    token, upscaled = _frozen_part(decoder, prompt_encoder, embedding.features, boxes)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        logits, _ = decoder(image_embeddings=embedding.features, image_pe=prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        ours = torch.einsum("bc,bchw->bhw", decoder.output_hypernetworks_mlps[0](token), upscaled)
    assert torch.allclose(ours, F.avg_pool2d(logits, POOL)[:, 0], atol=1e-3, rtol=1e-3)
    job = decoder_activations(prompter, [(embedding, masks[0]), (embedding, np.zeros_like(masks[0]))],
                              FineTuneParams(decoder_boxes=4), random.Random(0))
    try:
        while True:
            next(job)
    except StopIteration as stop:
        acts = stop.value
    assert len(acts) == 4 and acts.held_out.sum() == 1  # the empty object is skipped; a quarter held out
    assert acts.upscaled.shape == (4, 32, 256 // POOL, 256 // POOL) and 0 < float(acts.target.mean()) < 1
    other = prompter.embed(ImageStack(images[1:2], "us").slice(0))
    for held_out, expected in (("objects", [4, 0]), ("boxes", [1, 1])):
        job = decoder_activations(prompter, [(embedding, masks[0]), (other, masks[1])],
                                  FineTuneParams(decoder_boxes=4, decoder_held_out=held_out), random.Random(0))
        try:
            while True:
                next(job)
        except StopIteration as stop:
            acts = stop.value
        # "objects": every box of one of the two objects (a quarter, at least one) and none of the other's
        assert sorted(int(acts.held_out[n * 4:(n + 1) * 4].sum()) for n in range(2))[::-1] == expected


def test_adapter_and_decoder_on_an_image_set_and_reset_restores_both(busi_set):
    images, masks = busi_set
    segmenter = FewShotSegmenter(SegmentationParams(image_input_size=256))
    segmenter.set_image(images)
    support = [np.zeros(m.shape, np.uint8) for m in masks]
    support[0], support[1] = masks[0].astype(np.uint8), masks[1].astype(np.uint8)
    decoder = segmenter.sam.mask_decoder
    original = {k: v.clone() for k, v in decoder.state_dict().items()}
    params = FineTuneParams(method="adapter+decoder", adapter_steps=2, adapter_min_signed=2, decoder_steps=10,
                            decoder_boxes=4, decoder_tuned="last")
    losses = run(segmenter.fine_tune(support, params))
    assert len(losses) == 12  # no early stop before PATIENCE checks
    assert segmenter.adaptation.summary.startswith("Adapted the feature adapter (")
    assert "and the LiteMedSAM mask decoder (8,224 weights, trained " in segmenter.adaptation.summary
    assert segmenter.adaptation.summary.endswith("signed objects) on 2 signed images")
    assert any(not torch.equal(original[k], v) for k, v in decoder.state_dict().items())
    result = run(segmenter.segment(support, indices=[2]))
    assert result.labels[2].shape == masks[2].shape
    segmenter.reset_weights()
    assert not segmenter.is_fine_tuned and segmenter.cache.adapter is None
    assert all(torch.equal(original[k], v) for k, v in decoder.state_dict().items())


def test_the_adaptation_round_trips_through_the_arrays_a_bank_saves(liver, tmp_path):
    segmenter, support = liver
    run(segmenter.fine_tune(support, FineTuneParams(method="adapter", adapter_steps=2), empty_slices=[7]))
    arrays = segmenter.adaptation.arrays()
    assert set(arrays) == {"adapter/scale", "adapter/bias"}
    other = FewShotSegmenter(SegmentationParams(input_size=128))
    other.set_image(np.random.default_rng(0).random((2, 64, 64), np.float32))
    other.adaptation.load_arrays(other, arrays)
    assert torch.allclose(other.cache.adapter.scale, segmenter.cache.adapter.scale)
    assert other.cache.adapter.scale.abs().max() > 0
    with pytest.raises(FewShotError, match="do not fit"):
        other.adaptation.load_arrays(other, {"adapter/proj.weight": np.zeros((3, 3, 1, 1), np.float32)})
    assert not other.is_fine_tuned


def test_too_few_signed_slices_adapt_nothing_and_say_so(liver):
    segmenter, support = liver
    assert run(segmenter.fine_tune(support, FineTuneParams(method="adapter"))) == []  # 2 signed slices
    assert not segmenter.is_fine_tuned
    assert segmenter.adaptation.summary == "Adapted nothing (the feature adapter needs 3 signed slices, there are 2)"
    assert run(segmenter.fine_tune(support, FineTuneParams(method="decoder"))) == []  # a volume on the CPU
    assert segmenter.adaptation.summary.endswith("tuned only where refinement runs (off here))")


def test_on_a_volume_the_default_leaves_the_decoder_alone_and_says_why(liver, monkeypatch):
    """The button's default tunes LiteMedSAM's decoder on image sets only: on CHAOS-T2 volumes it lowered every
    protocol and gained on none (BENCHMARKS.md, session 14 "ftaudit"); `decoder_on_volumes` asks for it."""
    from napari_fewshot.core import decoder_tuning, finetune

    monkeypatch.setattr("napari_fewshot.core.config.REFINE_VOLUMES_BY_DEFAULT", True)  # refinement on, as shipped
    segmenter, support = liver
    asked = []

    def examples(seg, support_set, signed):
        asked.append(list(signed))
        return []
        yield

    def no_steps(prompter, found, params):
        return None, [], 0
        yield

    monkeypatch.setattr(finetune, "_decoder_examples", examples)
    monkeypatch.setattr(decoder_tuning, "tune_decoder", no_steps)
    assert not FineTuneParams().decoder_on_volumes
    assert run(segmenter.fine_tune(support)) == [] and asked == []  # the default: not even the embeddings
    assert not segmenter.is_fine_tuned
    assert segmenter.adaptation.summary == ("Adapted nothing (the LiteMedSAM decoder is not tuned on volumes unless "
                                            "Decoder on volumes is ticked: on test MR scans it made the masks worse)")
    segmenter._sam = type("NoModel", (), {"prompter": None})()  # the stubbed tuning needs no LiteMedSAM
    run(segmenter.fine_tune(support, FineTuneParams(decoder_on_volumes=True)))
    assert asked == [[1, 5]]  # asked for: the decoder stage ran on both signed slices
    assert segmenter.adaptation.summary == ("Adapted nothing (no signed object was large enough for the LiteMedSAM "
                                            "decoder, on 2 signed slices)")
