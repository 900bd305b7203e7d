"""Retrieval of the painted images most like the query (SegmentationParams.nearest_supports, core/nearest.py)."""

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, dice, run
from napari_fewshot.core.nearest import nearest


def _disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _set():
    """Four images of one kind (speckled grey tissue, a dark round lesion) and one unlike them (bright stripes),
    whose painted 'lesion' is a patch of the first kind's tissue: images 0-2 and 4 painted, image 3 the query."""
    rng = np.random.default_rng(0)
    shape, images, masks = (96, 96), [], []
    for centre in [(30, 30), (60, 62), (35, 64), (62, 30)]:
        image = np.clip(rng.normal(110, 25, shape), 0, 255)
        lesion = _disk(shape, centre, 12)
        image[lesion] = np.clip(rng.normal(30, 6, lesion.sum()), 0, 255)
        images.append(image.astype(np.uint8))
        masks.append(lesion)
    odd = np.where((np.arange(96) // 4) % 2 == 0, 230, 170)[None, :].repeat(96, 0).astype(float)
    patch = _disk(shape, (48, 48), 20)
    odd[patch] = np.clip(rng.normal(110, 25, patch.sum()), 0, 255)
    images.append(odd.astype(np.uint8))
    masks.append(patch)
    return images, masks


def _segment(images, support, k):
    params = SegmentationParams(nearest_supports=k, refine=RefineParams(enabled=False), image_input_size=192)
    seg = FewShotSegmenter(params)
    seg.set_image(images)
    return seg, run(seg.segment(support, indices=[3], similarity=True))


def test_the_query_lesion_comes_from_its_nearest_painted_images():
    images, masks = _set()
    painted = [0, 1, 2, 4]
    support = [m.astype(np.uint8) if i in painted else np.zeros(m.shape, np.uint8) for i, m in enumerate(masks)]
    alike = [m.astype(np.uint8) if i in (0, 1, 2) else np.zeros(m.shape, np.uint8) for i, m in enumerate(masks)]
    seg, near = _segment(images, support, 3)
    assert set(nearest(seg.cache.get, 3, painted, 3)) == {0, 1, 2}  # the striped image is the least alike
    _, every = _segment(images, support, 0)
    _, only_alike = _segment(images, alike, 0)
    # the lesion's map is what the three alike images alone give; with every painted image it is not
    np.testing.assert_allclose(near.similarity[1][3].astype(np.float32),
                               only_alike.similarity[1][3].astype(np.float32), atol=1e-3)
    assert np.abs(every.similarity[1][3].astype(np.float32) - near.similarity[1][3].astype(np.float32)).max() > 0.05
    assert dice(near.labels[3] == 1, masks[3]) >= dice(every.labels[3] == 1, masks[3])


def test_k_at_least_the_painted_count_or_a_volume_changes_nothing():
    images, masks = _set()
    support = [m.astype(np.uint8) if i != 3 else np.zeros(m.shape, np.uint8) for i, m in enumerate(masks)]
    _, k0 = _segment(images, support, 0)
    _, k4 = _segment(images, support, 4)
    np.testing.assert_array_equal(k0.labels[3], k4.labels[3])
    volume = np.stack(images[:4])
    vsupport = np.stack([m.astype(np.uint8) if i != 3 else np.zeros(m.shape, np.uint8) for i, m in enumerate(masks[:4])])
    results = []
    for k in (0, 1):
        seg = FewShotSegmenter(SegmentationParams(nearest_supports=k, refine=RefineParams(enabled=False),
                                                  input_size=192, postprocess=False))
        seg.set_image(volume)
        results.append(run(seg.segment(vsupport, indices=[3])).labels[3])
    np.testing.assert_array_equal(results[0], results[1])
