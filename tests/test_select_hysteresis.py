"""A new support must not spoil the images nobody touched (core/select_objects.py KEEP): after the support
changed, an image keeps the object its last selection showed unless a candidate beats it, scored under the new
support, by more than the margin; the memory of that selection is the segmenter's, per set."""

import numpy as np
import torch

from napari_fewshot.core import dice, run
from napari_fewshot.core import select_objects
from napari_fewshot.core.sam_prompt import PlaneEmbedding
from napari_fewshot.core.select_objects import embedding_contrast, select_plane, support_profiles
from test_select_objects import three_images

SHAPE = (128, 128)


def _disk(centre, radius, shape=SHAPE):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _inscribed(boxes, low_res=False):
    """LiteMedSAM's stand-in: the disk inscribed in each box, at the decoder's own size with low_res."""
    size = PlaneEmbedding(None, SHAPE, 256 / max(SHAPE)).resized if low_res else SHAPE
    sy, sx = size[0] / SHAPE[0], size[1] / SHAPE[1]
    return np.stack([_disk(((y0 + y1) / 2 * sy, (x0 + x1) / 2 * sx), min((x1 - x0) * sx, (y1 - y0) * sy) / 2, size)
                     for x0, y0, x1, y1 in boxes]).astype(np.float32)


def _two_objects(second_likeness: float):
    """Two disks that stand out equally from their surroundings, one in channel 1, one in channel 2 of the
    embedding; the support painted an object whose embedding leans towards the second by `second_likeness`
    (0: like neither more). Returns (first, second, embedding, scores, labels, profiles)."""
    first, second = _disk((40, 40), 12), _disk((88, 88), 12)
    grid = torch.zeros(1, 8, 64, 64)
    grid[0, 0] = 1.0
    for channel, disk in ((1, first), (2, second)):
        grid[0, channel] = 3 * torch.nn.functional.interpolate(
            torch.from_numpy(disk.astype(np.float32))[None, None], size=(64, 64), mode="area")[0, 0]
    embedding = PlaneEmbedding(grid, SHAPE, 256 / 128)
    painted = torch.zeros(1, 8, 64, 64)
    painted[0, 0], painted[0, 1], painted[0, 2] = 1.0, 3.0, 3.0 + second_likeness
    support = PlaneEmbedding(painted, SHAPE, 256 / 128)
    profiles = support_profiles({5: _disk((64, 64), 12).astype(np.int16)}, 1, lambda i: support)
    scores = np.zeros((2, *SHAPE), np.float32)
    scores[1] = np.where(first | second, 0.3, -0.3)
    labels = (scores[1] > scores[0]).astype(np.uint8)
    return first, second, embedding, scores, labels, profiles


def test_an_image_keeps_its_object_when_the_new_support_does_not_clearly_prefer_another():
    """Fails without the margin: the slightly preferred second disk replaces the first the image showed."""
    first, second, embedding, scores, labels, profiles = _two_objects(0.1)
    assert abs(embedding_contrast(embedding, first) - embedding_contrast(embedding, second)) < 0.05
    fresh = select_plane(labels, scores, [1], _inscribed, embedding, profiles)
    assert dice(fresh == 1, second) > 0.8  # chosen afresh: the second wins, by less than the margin
    before = first.astype(np.uint8)
    # compared after refit (session 21): at 0.05 the second disk, refit, beat the exact first disk by 0.0501
    kept = select_plane(labels, scores, [1], _inscribed, embedding, profiles, previous=before, keep=0.1)
    assert np.array_equal(kept == 1, first)
    off = select_plane(labels, scores, [1], _inscribed, embedding, profiles, previous=before, keep=None)
    assert np.array_equal(off, fresh)


def test_an_image_follows_a_support_that_clearly_prefers_another_object():
    first, second, embedding, scores, labels, profiles = _two_objects(6.0)
    out = select_plane(labels, scores, [1], _inscribed, embedding, profiles, previous=first.astype(np.uint8),
                       keep=0.05)
    assert dice(out == 1, second) > 0.8


def test_the_last_selection_is_remembered_per_set_and_forgotten_with_it(monkeypatch):
    monkeypatch.setattr(select_objects, "KEEP", 0.05)  # a wider margin than the default, on synthetic disks
    segmenter, support, planes = three_images(seed=3)
    first = run(segmenter.segment(support)).labels
    assert set(segmenter._selected) == {1, 2}
    assert np.array_equal(segmenter._selected[1][1], first[1])
    support[2][22:38, 22:38] = 1  # a new support: image 1 selected again, its last selection at hand
    again = run(segmenter.segment(support)).labels
    assert np.array_equal(again[1], first[1])  # kept: no candidate beats its object by KEEP
    segmenter.set_image(planes[:2])  # another set: nothing of the last one is kept
    assert segmenter._selected == {}


def test_without_the_margin_the_untouched_image_is_chosen_afresh(monkeypatch):
    """The control of the test above: with KEEP None (off) the same new support moves image 1's object."""
    monkeypatch.setattr(select_objects, "KEEP", None)
    segmenter, support, planes = three_images(seed=3)
    first = run(segmenter.segment(support)).labels
    support[2][22:38, 22:38] = 1
    assert not np.array_equal(run(segmenter.segment(support)).labels[1], first[1])
