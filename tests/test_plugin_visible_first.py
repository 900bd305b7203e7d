"""Segment all shows the visible slice first (issue 21 item 3): the window's segment job yields a preview of
the slice the user looks at, whose matches are remembered, before the whole volume's result."""

import numpy as np
import pytest
from conftest import wait_idle

pytestmark = pytest.mark.gui

SHAPE = (8, 48, 48)


def test_segment_all_previews_the_visible_slice_before_the_volume(make_napari_viewer, qtbot, monkeypatch):
    from napari_fewshot.plugin import widget as widget_module
    from napari_fewshot.plugin.widget import FewShotWidget
    from napari_fewshot.plugin.workers import Preview

    volume = np.random.default_rng(0).normal(20, 5, SHAPE).astype(np.float32)
    volume[:, 10:30, 12:30] += 100
    viewer = make_napari_viewer()
    image = viewer.add_image(volume, name="scan")
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.ui.settings["device"].value = "cpu"
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data = support.data
    data[1, 12:28, 14:28] = 1
    support.data = data
    viewer.dims.set_current_step(0, 5)
    yielded, original = [], widget_module.segment_job

    def recording(job, *args):
        generator = original(job, *args)
        try:
            while True:
                item = next(generator)
                if isinstance(item, Preview):
                    yielded.append(("preview", item.result.segmented_slices, np.array(item.result.labels[5])))
                yield item
        except StopIteration as stop:
            yielded.append(("result", stop.value.segmented_slices, np.array(stop.value.labels[5])))
            return stop.value

    monkeypatch.setattr(widget_module, "segment_job", recording)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert [kind for kind, *_ in yielded] == ["preview", "result"]
    assert yielded[0][1] == [5]  # only the visible slice, first
    assert len(yielded[1][1]) == SHAPE[0] - 1  # then every slice but the painted one
    assert yielded[0][2].any()  # the preview found the bright square on the visible slice
    assert np.asarray(widget.session.prediction.data)[5].any()
    widget.segment("current")  # a single slice has nothing to preview
    wait_idle(qtbot, widget)
    assert [kind for kind, *_ in yielded][2:] == ["result"]


def test_the_preview_shows_only_classes_painted_near_the_visible_slice(make_napari_viewer, qtbot, monkeypatch):
    """Far from the paint the slice alone draws what the 3D clean-up removes (core/postprocess.near_paint): the
    preview leaves it out, the whole volume's result still has what connects to the paint."""
    from napari_fewshot.core.postprocess import PREVIEW_REACH
    from napari_fewshot.plugin import widget as widget_module
    from napari_fewshot.plugin.widget import FewShotWidget
    from napari_fewshot.plugin.workers import Preview

    slices = PREVIEW_REACH + 8
    volume = np.random.default_rng(0).normal(20, 5, (slices, 48, 48)).astype(np.float32)
    volume[:, 10:30, 12:30] += 100  # one bright column through every slice: connected to the paint
    viewer = make_napari_viewer()
    image = viewer.add_image(volume, name="scan")
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.ui.settings["device"].value = "cpu"
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data = support.data
    data[1, 12:28, 14:28] = 1
    support.data = data
    far = slices - 1  # PREVIEW_REACH + 6 slices from the paint
    viewer.dims.set_current_step(0, far)
    previews, original = [], widget_module.segment_job

    def recording(job, *args):
        generator = original(job, *args)
        try:
            while True:
                item = next(generator)
                if isinstance(item, Preview):
                    previews.append(np.array(item.result.labels[far]))
                yield item
        except StopIteration as stop:
            return stop.value

    monkeypatch.setattr(widget_module, "segment_job", recording)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert len(previews) == 1 and not previews[0].any()  # nothing drawn this far from the paint
    assert np.asarray(widget.session.prediction.data)[far, 12:28, 14:28].mean() > 0.5  # the result has it


def test_near_paint_keeps_each_class_painted_within_reach():
    from napari_fewshot.core.postprocess import near_paint

    plane = np.zeros((4, 4), np.uint8)
    plane[0, :2], plane[1, :2], plane[2, :2] = 3, 7, 9  # label values
    targets = {10: np.array([[1, 0], [0, -1]]), 20: np.array([[2, 0], [0, 0]]), 14: np.zeros((2, 2), int)}
    kept = near_paint(plane, 15, targets, class_ids=[3, 7, 9], reach=5)  # slice 10 (class 3) and 20 (class 7)
    assert set(np.unique(kept)) == {0, 3, 7} and kept.dtype == plane.dtype
    assert set(np.unique(near_paint(plane, 4, targets, class_ids=[3, 7, 9], reach=5))) == {0}
    assert np.array_equal(near_paint(plane, 12, targets, [3, 7, 9], reach=2), np.where(plane == 3, 3, 0))
