"""One LiteMedSAM service (core/sam_service.py): refinement and the box tool share the model and the embeddings
of the segmenter that owns it; decodes are batched; tuned decoder weights keep the embeddings."""

import numpy as np
import torch

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams
from napari_fewshot.core.box_to_mask import BoxSegmenter
from napari_fewshot.core.refine import Refiner
from napari_fewshot.core.sam_prompt import PlaneEmbedding
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.stack import ImageStack


def _volume() -> tuple[np.ndarray, list[np.ndarray]]:
    """(3, 64, 64) float32: a bright disc on noise per slice; the labels: a square over each disc."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[:64, :64]
    volume = 0.2 * rng.random((3, 64, 64)).astype(np.float32)
    labels = []
    for s in range(3):
        volume[s][(rows - 30 - 3 * s) ** 2 + (cols - 32) ** 2 < 12 ** 2] += 0.7
        plane = np.zeros((64, 64), np.uint8)
        plane[16 + 3 * s:44 + 3 * s, 18:46] = 1
        labels.append(plane)
    return volume, labels


def test_refine_and_the_box_tool_load_litemedsam_once_and_embed_a_slice_once():
    volume, labels = _volume()
    segmenter = FewShotSegmenter(SegmentationParams(refine=RefineParams(enabled=True)))
    segmenter.set_image(volume)
    sam = segmenter.sam
    assert segmenter.refiner.service is sam and not sam.loaded  # nothing loaded before it is needed
    list(segmenter.refiner.refine(segmenter.stack, labels, [1], [1]))
    assert (sam.loads, sam.computed) == (1, 1)
    boxes = BoxSegmenter(service=sam)  # the box tool on the segmenter's service, with its own ImageStack
    own_stack = ImageStack(volume, segmenter.params.modality)
    mask = boxes.slice_mask(own_stack, 1, (18, 17, 46, 47))
    assert mask.shape == (64, 64) and mask[33, 32]
    assert (sam.loads, sam.computed) == (1, 1)  # the slice refinement embedded: the decoder only
    boxes.slice_mask(own_stack, 2, (18, 20, 46, 50))  # a box first ...
    list(segmenter.refiner.refine(segmenter.stack, labels, [2], [1]))  # ... then refinement on its slice
    assert (sam.loads, sam.computed) == (1, 2)
    other = FewShotSegmenter(SegmentationParams())
    assert other.sam is not sam and not other.sam.loaded  # a service per segmenter, nothing shared


def test_the_prompts_of_several_planes_decode_together_as_they_do_one_by_one():
    rng = np.random.default_rng(0)
    service = LiteMedSAMService("cpu")
    one = service.embedding(rng.random((40, 60)).astype(np.float32))
    two = service.embedding(rng.random((50, 50)).astype(np.float32))
    masks = (rng.random((1, 50, 50)) > 0.5).astype(np.float32)
    requests = [(one, np.array([[5, 5, 30, 25], [20, 10, 55, 38]], np.float32), None),
                (two, np.array([[8, 6, 40, 44]], np.float32), masks)]
    together = service.decode_with_quality(requests)
    for (probs, quality), request in zip(together, requests):
        (alone, alone_quality), = service.decode_with_quality([request])  # the same runtime, one plane
        assert probs.shape == alone.shape == (len(request[1]), *request[0].shape)
        np.testing.assert_allclose(probs, alone, atol=1e-4)
        np.testing.assert_allclose(quality, alone_quality, atol=1e-4)
    assert service.decode([(one, np.zeros((0, 4), np.float32), None)])[0].shape == (0, 40, 60)


class _Prompter:
    """A stand-in for BoxPrompter: counts embeddings; decodes each box as itself; a linear "mask decoder"."""

    weights_id = "fake"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.embedded = self.decoded = 0
        self.model = torch.nn.Module()
        self.model.mask_decoder = torch.nn.Linear(3, 2)

    def embed(self, plane):
        self.embedded += 1
        return PlaneEmbedding(torch.zeros(1, 256, 64, 64), tuple(plane.shape[:2]), 256 / max(plane.shape[:2]))

    def decode_batch(self, requests, max_prompts=32):
        out = []
        for embedding, boxes, _ in requests:
            self.decoded += 1
            probs = np.zeros((len(boxes), *embedding.shape), np.float32)
            for n, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
                probs[n, y0:y1 + 1, x0:x1 + 1] = 0.9
            out.append((probs, np.ones(len(boxes), np.float32)))
        return out


def test_tuned_decoder_weights_keep_the_embeddings_but_refined_slices_are_decoded_again():
    volume, labels = _volume()
    service = LiteMedSAMService("cpu", prompter_factory=_Prompter)
    refiner = Refiner(SegmentationParams(refine=RefineParams(enabled=True)), service)
    stack = ImageStack(volume)
    list(refiner.refine(stack, [x.copy() for x in labels], range(3), [1]))
    fake = service.prompter
    assert (fake.embedded, fake.decoded) == (3, 3)
    original = service.decoder_state()
    tuned = {k: v + 1 for k, v in original.items()}
    service.load_decoder_state(tuned)
    assert service.decoder_tuned and torch.equal(service.mask_decoder.weight, tuned["weight"])
    tuned["weight"].zero_()  # the service keeps its own copy
    assert not torch.equal(service.mask_decoder.weight, tuned["weight"])
    list(refiner.refine(stack, [x.copy() for x in labels], range(3), [1]))
    assert (fake.embedded, fake.decoded) == (3, 6)  # new weights: decoded again, embeddings kept
    service.reset_decoder()
    assert not service.decoder_tuned
    assert all(torch.equal(v, original[k]) for k, v in service.decoder_state().items())
    list(refiner.refine(stack, [x.copy() for x in labels], range(3), [1]))
    assert (fake.embedded, fake.decoded) == (3, 9) and service.loads == 1


def test_the_litemedsam_encoder_is_built_from_the_segmenters_service_and_fine_tunes_a_copy():
    segmenter = FewShotSegmenter(SegmentationParams(encoder="litemedsam"))
    assert not segmenter.sam.loaded  # building the segmenter loads nothing
    encoder = segmenter.encoder
    sam = segmenter.sam
    assert sam.loads == 1 and encoder.weights_id == sam.weights_id
    tinyvit = sam.model.image_encoder
    assert torch.equal(encoder.layers[2].blocks[0].attn.qkv.weight, tinyvit.layers[2].blocks[0].attn.qkv.weight)
    with torch.no_grad():
        encoder.layers[2].blocks[0].attn.qkv.weight.add_(1.0)  # as fine-tuning would
    assert not torch.equal(encoder.layers[2].blocks[0].attn.qkv.weight, tinyvit.layers[2].blocks[0].attn.qkv.weight)
    assert encoder(torch.rand(1, 3, 64, 48)).shape == (1, 320, 8, 6)
    list(segmenter.refiner.refine(ImageStack(np.random.default_rng(0).random((1, 48, 48))),
                                  [np.pad(np.ones((20, 20), np.uint8), 14)], [0], [1]))
    assert sam.loads == 1 and sam.computed == 1  # refinement on the same model, the full-size image encoder
