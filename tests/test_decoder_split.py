"""LiteMedSAM's converted mask decoder takes each image once (core/sam_decoder.py graph 2, SharedImageGraph; session
17): the first transformer block's projections of the image tokens are computed per plane, not per box. It must
decode what graph 1 (SingleMaskGraph, a copy of the image per prompt: what ran before) decodes, on real CT-sample
slices and a BUSI image, with boxes of several planes and mask prompts mixed in one call; and the service must
hand it each plane once. Both graphs compiled in f32 (exact arithmetic, whatever the CPU)."""

import os

import numpy as np
import pytest
import torch
from conftest import convert_decoder_graphs

from napari_fewshot.core import sam_decoder
from napari_fewshot.core.sam_prompt import BoxPrompter, box_of

openvino = pytest.importorskip("openvino", reason="openvino is not installed: the torch decoder is the only one")
BUSI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "busi", "benign", "benign (1).png")


@pytest.fixture(scope="module")
def prompter():
    return BoxPrompter()


@pytest.fixture(scope="module")
def graphs(prompter):
    """{1: graph 1, 2: graph 2, 3: graph 3}, converted in memory, compiled in f32."""
    out = convert_decoder_graphs(prompter.model, (1, 2, 3))
    assert out[2].name.endswith("-f32")
    return out


@pytest.fixture(scope="module")
def requests_(prompter):
    """[(PlaneEmbedding, (N, 4) boxes, masks or None)]: two CT-sample slices (each organ boxed + 5 % and + 20 %),
    the same slices' organs again with their eroded masks as mask prompts, and a BUSI image's lesion when
    ../shared/data is there (a fresh clone has none)."""
    from scipy import ndimage

    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_busi_mask, read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    stack = ImageStack(volume.data)
    out, masked = [], []
    for index in (76, 94):
        organs = [c for c in np.unique(labels[index])[1:] if (labels[index] == c).sum() >= 50]
        embedding = prompter.embed(stack.slice(index))
        boxes = [box_of(labels[index] == c, margin) for c in organs for margin in (0.05, 0.2)]
        out.append((embedding, np.stack(boxes), None))
        masks = np.stack([ndimage.binary_erosion(labels[index] == c, iterations=2) for c in organs])
        masked.append((embedding, np.stack([box_of(m, 0.1) for m in masks]), masks.astype(np.float32)))
    if os.path.exists(BUSI):
        image = read_volume(BUSI).data[0]
        image = image.mean(-1) if image.ndim == 3 else image
        image = (image - image.min()) / max(1e-6, float(image.max() - image.min()))
        box = box_of(read_busi_mask(BUSI), 0.1)
        out.append((prompter.embed(image), np.stack([box, box * 0.97 + 2]), None))
    return out + masked


class Capture:
    """A decoder runtime that keeps what it returned, and the number of image rows it was given per call."""

    def __init__(self, runtime):
        self.runtime, self.logits, self.iou, self.rows = runtime, [], [], []

    def __call__(self, image, sparse, dense, index=None, window=None):
        logits, iou = self.runtime(image, sparse, dense, index, window)
        self.logits.append(logits)
        self.iou.append(iou)
        self.rows.append((len(image), len(sparse)))
        self.windows = getattr(self, "windows", []) + [window]
        return logits, iou


def _dice(a, b) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_each_image_once_decodes_what_a_copy_per_prompt_decodes(prompter, graphs, requests_):
    captured = {g: Capture(graphs[g]) for g in (1, 2)}
    probs = {g: prompter.decode_batch(requests_, 32, decoder=captured[g]) for g in (1, 2)}
    logits = {g: torch.cat(captured[g].logits) for g in (1, 2)}
    iou = {g: torch.cat(captured[g].iou) for g in (1, 2)}
    assert len(logits[2]) >= 12
    assert float((logits[1] - logits[2]).abs().max()) < 1e-3
    assert float((iou[1] - iou[2]).abs().max()) < 1e-4
    assert min(_dice(a > 0, b > 0) for a, b in zip(logits[1], logits[2])) >= 0.999
    for (p1, q1), (p2, q2) in zip(probs[1], probs[2]):
        assert p1.shape == p2.shape and float(np.abs(p1 - p2).max()) < 1e-4
    # graph 2 was given one row per plane for the box-only prompts and one per mask prompt, not one per box
    masked = sum(len(b) for _, b, m in requests_ if m is not None)
    planes = sum(1 for _, _, m in requests_ if m is None)
    assert captured[2].rows == [(planes + masked, len(logits[2]))]


def test_a_batch_of_several_planes_decodes_each_plane_like_a_call_of_its_own(prompter, graphs, requests_):
    together = prompter.decode_batch(requests_, 32, decoder=graphs[2])
    for request, (probs, quality) in zip(requests_, together):
        alone, alone_quality = prompter.decode_batch([request], 32, decoder=graphs[2])[0]
        assert float(np.abs(probs - alone).max()) < 1e-4 and float(np.abs(quality - alone_quality).max()) < 1e-5
    low = prompter.decode_batch(requests_, 4, low_res=True, decoder=graphs[2])  # selection's candidates
    low_one = prompter.decode_batch(requests_, 4, low_res=True, decoder=graphs[1])
    assert min(_dice(a > 0.5, b > 0.5) for x, y in zip(low, low_one) for a, b in zip(x[0], y[0])) >= 0.999


def test_the_torch_decoder_takes_the_same_rows(prompter, requests_):
    """The torch decoder (GPU, fallback) expands the rows itself: the same probabilities as before the index."""
    embedding, boxes, _ = requests_[0]
    ours = prompter.decode_batch([(embedding, boxes, None)])[0][0]
    with torch.no_grad():
        sparse, dense = prompter.model.prompt_encoder(points=None, boxes=torch.from_numpy(
            boxes * embedding.scale)[:, None, :], masks=None)
        features = embedding.features.float().expand(len(boxes), -1, -1, -1)
        logits, _ = sam_decoder.TorchDecoder(prompter.model)(features, sparse, dense)
    h, w = embedding.resized
    reference = torch.sigmoid(torch.nn.functional.interpolate(logits[:, :, :h, :w], size=embedding.shape,
                                                              mode="bilinear", align_corners=False))[:, 0]
    assert float(np.abs(ours - reference.numpy()).max()) < 1e-6

