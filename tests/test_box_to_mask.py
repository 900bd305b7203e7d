"""Box to mask (core): a rectangle on a plane -> that object's mask; embeddings cached per plane; bad boxes
explained; the device rule ("auto" takes CUDA when there is one) for the box tool and the feature encoder."""

import numpy as np
import pytest
import torch
from shared_data import BUSI, require

from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter, clip_box
from napari_fewshot.core.sam_prompt import box_region
from napari_fewshot.core.sam_prompt import PlaneEmbedding, box_of
from napari_fewshot.core.sam_service import EMBEDDING_BYTES, LiteMedSAMService
from napari_fewshot.errors import FewShotError


class FakePrompter:
    """Embeds by counting; decodes a box into a disc of probability 0.9 filling it, plus a far-away blob
    of 0.8 outside it (what the box crop removes) and a small one inside its corner (the largest-component
    rule removes it)."""

    device = torch.device("cpu")
    weights_id = "fake"

    def __init__(self, device="cpu"):
        self.embedded = []

    def embed(self, plane):
        self.embedded.append(plane.copy())
        return PlaneEmbedding(torch.zeros(1), tuple(plane.shape[:2]), 1.0)

    def decode_batch(self, requests, max_prompts=32):
        return [(self.decode(e, b), np.ones(len(b), np.float32)) for e, b, _ in requests]

    def decode(self, embedding, boxes):
        height, width = embedding.shape
        rows, cols = np.mgrid[:height, :width]
        out = np.zeros((len(boxes), height, width), np.float32)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            cy, cx, r = (y0 + y1) / 2, (x0 + x1) / 2, min(x1 - x0, y1 - y0) / 3
            out[k][(rows - cy) ** 2 + (cols - cx) ** 2 <= r * r] = 0.9
            out[k][: 3, : 3] = 0.8  # outside the boxes used below
            out[k][int(y0) + 1, int(x0) + 1] = 0.7  # inside the box, apart from the disc
        return out


def _boxes(params=None, fake=None) -> BoxSegmenter:
    """A BoxSegmenter on a service of its own whose LiteMedSAM is `fake` (a FakePrompter)."""
    fake = fake or FakePrompter()
    capacity = (params or BoxParams()).cached_planes * EMBEDDING_BYTES
    return BoxSegmenter(params, service=LiteMedSAMService("cpu", capacity, prompter_factory=lambda device: fake))


def _plane(seed=0, shape=(40, 50)):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_a_box_becomes_the_object_inside_it_and_nothing_else():
    boxes = _boxes()
    mask = boxes.mask(_plane(), (10, 8, 30, 28))
    assert mask.shape == (40, 50) and mask.dtype == bool
    assert mask[18, 20] and not mask[:3, :3].any()  # the blob outside the box is cut
    assert not mask[9, 11]  # the speck in the box corner is not the largest component
    loose = _boxes(BoxParams(inside_box=False, largest_component=False))
    raw = loose.mask(_plane(), (10, 8, 30, 28))
    assert raw[:3, :3].all() and raw[9, 11]


def test_embedding_is_computed_once_per_plane_and_forgotten_beyond_the_cache():
    fake = FakePrompter()
    boxes = _boxes(BoxParams(cached_planes=2), fake)
    a, b, c = _plane(0), _plane(1), _plane(2)
    boxes.mask(a, (5, 5, 20, 20))
    assert boxes.is_cached(a) and not boxes.is_cached(b)
    boxes.mask(a, (10, 10, 40, 30))  # a second box on the same slice: decoder only
    boxes.mask(a.copy(), (10, 10, 40, 30))  # the same pixels in another array: still cached
    assert len(fake.embedded) == 1 and boxes.embedded == 1
    boxes.mask(b, (5, 5, 20, 20))
    boxes.mask(c, (5, 5, 20, 20))  # a is the oldest and drops out
    assert len(fake.embedded) == 3 and not boxes.is_cached(a) and boxes.is_cached(b) and boxes.is_cached(c)
    changed = a.copy()
    changed[0, 0] += 0.5
    assert not boxes.is_cached(changed)  # keyed by the pixels, not by where they came from


def test_boxes_are_sorted_clipped_and_bad_ones_explained():
    np.testing.assert_allclose(clip_box((30, 20, -5, 2), (40, 50)), [0, 2, 30, 20])
    np.testing.assert_allclose(clip_box((10, 10, 80, 60), (40, 50)), [10, 10, 49, 39])
    with pytest.raises(FewShotError, match="outside the image"):
        clip_box((60, 5, 90, 20), (40, 50))
    with pytest.raises(FewShotError, match="too small"):
        clip_box((10, 10, 11, 30), (40, 50))
    with pytest.raises(FewShotError, match="outside the image"):
        _boxes().mask(_plane(), (-30, -30, -1, -1))
    region = box_region((1.5, 2, 3, 4), (6, 6))
    assert region.sum() == 3 * 3 and region[2:5, 1:4].all()
    with pytest.raises(FewShotError, match="threshold"):
        BoxParams(threshold=1.0)


def test_auto_device_puts_the_box_tool_and_the_encoder_on_cuda_when_present(monkeypatch):
    from napari_fewshot.core import SegmentationParams
    from napari_fewshot.core.segmenter import FewShotSegmenter

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert BoxSegmenter(device="auto").device == torch.device("cuda")  # LiteMedSAM loads there on first use
    assert BoxSegmenter(device="cpu").device == torch.device("cpu")

    class Recorder(torch.nn.Module):
        def to(self, device):
            self.moved_to = torch.device(device)
            return self

    encoder = Recorder()
    segmenter = FewShotSegmenter(SegmentationParams(encoder="litemedsam", device="auto"), encoder=encoder)
    assert encoder.moved_to == torch.device("cuda") and segmenter.device == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert BoxSegmenter(device="auto").device.type in ("cpu", "mps")


def test_a_box_around_a_real_busi_lesion_gives_its_mask():
    """LiteMedSAM on one real BUSI image (both subsets' first image): the reference box +10 % gives the lesion."""
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_busi_mask, read_volume

    boxes = BoxSegmenter(device="cpu")
    for name in ("benign/benign (1).png", "malignant/malignant (1).png"):
        path = require(BUSI) / name
        reference = read_busi_mask(path)
        image = read_volume(path).data[0]
        plane = ImageStack([image if image.ndim == 2 else image.mean(-1)]).slice(0)
        made = boxes.mask(plane, box_of(reference, 0.1))
        dice = 2 * (made & reference).sum() / (made.sum() + reference.sum())
        assert dice > 0.8, (name, dice)


def test_triton_is_kept_out_only_when_mesas_llvm_is_loaded(tmp_path):
    """Loading Triton after Mesa's libLLVM (software OpenGL, Xvfb) crashed napari when LiteMedSAM was first used."""
    import sys

    from napari_fewshot.core.triton_guard import keep_triton_out

    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libGL.so.1\n")
    saved = {name: module for name, module in sys.modules.items() if name == "triton" or name.startswith("triton.")}
    for name in saved:
        del sys.modules[name]
    try:
        assert not keep_triton_out(str(maps)) and "triton" not in sys.modules
        maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
        assert keep_triton_out(str(maps)) and sys.modules["triton"] is None
        with pytest.raises(ImportError):
            import triton  # noqa: F401
        assert not keep_triton_out(str(maps))  # decided once
        assert not keep_triton_out(str(tmp_path / "missing"))
    finally:
        sys.modules.pop("triton", None)
        sys.modules.update(saved)
