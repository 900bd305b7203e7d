"""Each slice of a volume is matched against the painted slices next to it (core/slice_reach.py,
SegmentationParams.support_reach): the rule itself, a correction that re-matches only the slices between its
neighbouring painted slices, explanations from those slices only, and 2D images left alone. On the CT sample that
ships with the package (liver and spleen painted from its reference)."""

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.config import SegmentationParams as Params
from napari_fewshot.core.slice_reach import nearest_slices, reach_of
from napari_fewshot.errors import FewShotError

from conftest import ct_liver_spleen_slices


def test_each_class_reaches_the_nearest_painted_slice_showing_it_on_either_side():
    shows = {10: {0, 1}, 20: {0, 1, 2}, 30: {0, 1}}  # class 2 painted on slice 20 only
    assert nearest_slices(shows, 15) == {10, 20}
    assert nearest_slices(shows, 20) == {20}
    assert nearest_slices(shows, 25) == {20, 30}
    assert nearest_slices(shows, 3) == {10, 20}  # below the paint: the nearest of each class, however far
    assert nearest_slices(shows, 40) == {30, 20}
    assert nearest_slices({}, 5) == set()


def test_the_setting_refuses_a_word_it_does_not_know_in_a_sentence():
    with pytest.raises(FewShotError, match="nearest or all"):
        Params(support_reach="closest")


@pytest.fixture(scope="module")
def ct_liver_spleen():
    """The CT sample's slices around liver and spleen, every other one, with features computed."""
    volume, truth, both = ct_liver_spleen_slices(2)
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(volume)
    run(segmenter.compute_features())
    return segmenter, truth, both


def _matched_slices(segmenter, painted_slice: int) -> set[int]:
    """Query slices that have a map (full or partial) of the local group of `painted_slice`."""
    cache = segmenter._matches
    keys = list(cache._maps) + list(cache._partial)
    return {slice_key[2] for slice_key, group_key in keys
            if isinstance(group_key, tuple) and len(group_key) > 2 and group_key[2] == painted_slice}


def test_a_correction_is_matched_only_between_its_neighbouring_painted_slices(ct_liver_spleen):
    segmenter, truth, both = ct_liver_spleen
    low, high = both[len(both) // 4], both[3 * len(both) // 4]
    between = both[len(both) // 2]
    results = {}
    for reach in ("all", "nearest"):
        segmenter.params = SegmentationParams(device="cpu", support_reach=reach)
        segmenter._matches.clear()
        support = np.zeros_like(truth)
        support[[low, high]] = truth[[low, high]]
        run(segmenter.segment(support, refine_later=True))
        support[between] = truth[between]
        results[reach] = run(segmenter.segment(support, refine_later=True))
        matched = _matched_slices(segmenter, between)
        if reach == "all":
            assert min(matched) < low and max(matched) > high  # every slice, far ones too
        else:
            assert matched and matched <= set(range(low + 1, high))  # only between the neighbours
            assert {between - 1, between + 1} <= matched
    for reach, result in results.items():  # both still draw both organs
        for organ in (1, 2):
            predicted, reference = result.labels == organ, truth == organ
            dice = 2 * (predicted & reference).sum() / (predicted.sum() + reference.sum())
            assert dice > 0.75, (reach, organ, dice)
    # each slice outside the painted range is explained by the painted slice nearest to it only
    result = results["nearest"]
    z = next(z for z in range(high + 1, len(truth)) if (result.labels[z] == 1).any())
    support_map, _ = result.explainer.slice_map(np.asarray(result.labels[z]), z)
    assert set(np.unique(support_map[result.labels[z] > 0])) == {high}


def test_images_of_a_set_are_never_restricted(ct_liver_spleen):
    _, truth, both = ct_liver_spleen
    images = FewShotSegmenter(SegmentationParams(device="cpu"))
    images.set_image([truth[z].astype(np.float32) for z in both[:3]])  # a set of 2D images
    assert reach_of(images, [object(), object(), object()]) is None


def test_the_panel_offers_the_choice_and_segments_with_it(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    row = next(x for x in widget.ui.settings.more if x.name == "support_reach")
    assert row.label == "Painted slices per slice (volumes)" and row.value == "nearest"
    assert widget.params().support_reach == "nearest"
    row.value = "all"
    assert widget.params().support_reach == "all"
