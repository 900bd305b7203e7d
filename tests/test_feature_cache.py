"""Feature cache: memory budget with spill to disk, persistence keyed by a signature, OOM back-off."""

import json

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.encoders.base import Encoder
from napari_fewshot.core.features import FeatureCache
from napari_fewshot.core.stack import ImageStack


def volume(seed=0, slices=6):
    return np.random.default_rng(seed).random((slices, 64, 64)).astype(np.float32)


class CountingEncoder(Encoder):
    """A tiny deterministic encoder that records the batch sizes it was called with."""

    name, feature_dim, weights_id = "counting", 4, "counting-v1"

    def __init__(self, fail_above: int | None = None, fail_on: str | None = None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 8, stride=8)
        torch.nn.init.constant_(self.conv.weight, 0.01)
        torch.nn.init.constant_(self.conv.bias, 0.1)
        self.calls: list[int] = []
        self.fail_above, self.fail_on = fail_above, fail_on

    def forward(self, x):
        self.calls.append(len(x))
        if (self.fail_above is not None and len(x) > self.fail_above) or x.device.type == self.fail_on:
            raise torch.OutOfMemoryError("simulated")
        return self.conv(x)


def test_memory_budget_spills_to_disk_and_reads_back_the_same():
    stack = ImageStack(volume())
    reference = FeatureCache(CountingEncoder(), stack, torch.device("cpu"), 64)
    run(reference.compute())
    one_slice = reference.nbytes // 6
    tight = FeatureCache(CountingEncoder(), stack, torch.device("cpu"), 64, memory_budget=int(one_slice * 2.5))
    run(tight.compute())
    assert tight.nbytes <= one_slice * 2.5 and len(tight) == 6
    for i in range(6):
        assert torch.equal(tight.get(i), reference.get(i))
    assert tight.nbytes <= one_slice * 2.5


def test_reopening_the_same_scan_reuses_features_from_disk(tmp_path):
    params = SegmentationParams(cache_dir=str(tmp_path))
    first = FewShotSegmenter(params, encoder=CountingEncoder())
    first.set_image(volume())
    run(first.compute_features())
    assert (first.cache.persist_dir / "meta.json").exists()

    again = FewShotSegmenter(params, encoder=CountingEncoder())
    again.set_image(volume())
    assert len(again.cache) == 6  # found on disk before computing anything
    run(again.compute_features())
    assert again.encoder.calls == []
    assert torch.equal(again.cache.get(3), first.cache.get(3))


def test_a_changed_scan_or_encoder_never_reuses_features(tmp_path):
    params = SegmentationParams(cache_dir=str(tmp_path))
    first = FewShotSegmenter(params, encoder=CountingEncoder())
    first.set_image(volume())
    run(first.compute_features())
    edited = volume()
    edited[2, 10, 10] += 0.5  # one voxel changed
    for image, encoder in ((edited, CountingEncoder()), (volume(), CountingEncoder())):
        if image is not edited:
            encoder.weights_id = "counting-v2"
        segmenter = FewShotSegmenter(params, encoder=encoder)
        segmenter.set_image(image)
        assert len(segmenter.cache) == 0
        run(segmenter.compute_features())
        assert sum(encoder.calls) == 6


def test_a_corrupt_disk_cache_is_discarded(tmp_path):
    params = SegmentationParams(cache_dir=str(tmp_path))
    first = FewShotSegmenter(params, encoder=CountingEncoder())
    first.set_image(volume())
    run(first.compute_features())
    (first.cache.persist_dir / "meta.json").write_text(json.dumps({"signature": "something else"}))
    again = FewShotSegmenter(params, encoder=CountingEncoder())
    again.set_image(volume())
    assert len(again.cache) == 0


def test_fine_tuned_features_are_not_persisted(tmp_path):
    params = SegmentationParams(cache_dir=str(tmp_path), prototype_mode="global")
    segmenter = FewShotSegmenter(params, encoder=CountingEncoder())
    image = volume()
    image[:, 20:40, 20:40] += 2
    segmenter.set_image(image)
    support = np.zeros(image.shape, np.uint8)
    support[[1, 4], 20:40, 20:40] = 1
    from napari_fewshot.core import FineTuneParams

    run(segmenter.fine_tune(support, FineTuneParams(method="encoder", steps=1, augment=False)))
    run(segmenter.compute_features())
    assert segmenter.cache.persist_dir is None
    segmenter.reset_weights()
    assert segmenter.cache.persist_dir is not None


def test_gpu_out_of_memory_halves_the_batch():
    encoder = CountingEncoder(fail_above=2)
    cache = FeatureCache(encoder, ImageStack(volume(slices=8)), torch.device("cpu"), 64, batch_size=8)
    run(cache.compute())
    assert len(cache) == 8 and cache.batch_size == 2
    assert encoder.calls[:3] == [8, 4, 2]
    assert any("ran out of memory" in n for n in cache.notices)


def test_out_of_memory_for_one_slice_falls_back_to_the_cpu():
    # "meta" stands in for a GPU: the encoder fails there, whatever the batch, and works on the CPU.
    encoder = CountingEncoder(fail_on="meta")
    cache = FeatureCache(encoder, ImageStack(volume(slices=3)), torch.device("meta"), 64, batch_size=1)
    run(cache.compute())
    assert cache.device.type == "cpu" and len(cache) == 3
    assert any("continuing on the CPU" in n for n in cache.notices)
    assert torch.isfinite(cache.get(0)).all()


def test_out_of_memory_on_the_cpu_is_a_clear_error():
    cache = FeatureCache(CountingEncoder(fail_above=0), ImageStack(volume(slices=1)), torch.device("cpu"), 64)
    with pytest.raises(MemoryError, match="lower the input size"):
        run(cache.compute())


def test_freed_heap_memory_is_given_back_on_glibc():
    """Per-slice loops trim the heap (core/memory.py); on glibc Linux the call must really be made."""
    import platform
    import sys

    from napari_fewshot.core.memory import release_free_memory, trim_now

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert release_free_memory() is glibc
    for count in range(1, 20):
        trim_now(count)  # never raises, whatever the platform
