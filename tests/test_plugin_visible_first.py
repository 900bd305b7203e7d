"""Segment all shows the visible slice first (issue 21 item 3): the window's segment job yields a preview of
the slice the user looks at, whose matches are remembered, before the whole volume's result."""

import numpy as np
import pytest
from conftest import wait_idle

pytestmark = pytest.mark.gui

SHAPE = (8, 48, 48)


def painted_column(make_napari_viewer, slices: int, current: int):
    """A viewer and widget on a noisy volume with one bright column through every slice, painted on slice 1,
    slice `current` visible. Returns (viewer, widget)."""
    from napari_fewshot.plugin.widget import FewShotWidget

    volume = np.random.default_rng(0).normal(20, 5, (slices, *SHAPE[1:])).astype(np.float32)
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
    viewer.dims.set_current_step(0, current)
    return viewer, widget


def recording(monkeypatch, index: int) -> list:
    """Records what the widget's segment job yields: ("preview" or "result", segmented slices, labels of slice
    `index`), in order."""
    from napari_fewshot.plugin import widget as widget_module
    from napari_fewshot.plugin.workers import Preview

    yielded, original = [], widget_module.segment_job

    def job(*args):
        generator = original(*args)
        try:
            while True:
                item = next(generator)
                if isinstance(item, Preview):
                    yielded.append(("preview", item.result.segmented_slices, np.array(item.result.labels[index])))
                yield item
        except StopIteration as stop:
            yielded.append(("result", stop.value.segmented_slices, np.array(stop.value.labels[index])))
            return stop.value

    monkeypatch.setattr(widget_module, "segment_job", job)
    return yielded


def test_segment_all_previews_the_visible_slice_before_the_volume(make_napari_viewer, qtbot, monkeypatch):
    viewer, widget = painted_column(make_napari_viewer, SHAPE[0], 5)
    yielded = recording(monkeypatch, 5)
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

    slices = PREVIEW_REACH + 8
    far = slices - 1  # PREVIEW_REACH + 6 slices from the paint on slice 1
    viewer, widget = painted_column(make_napari_viewer, slices, far)
    yielded = recording(monkeypatch, far)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert [kind for kind, *_ in yielded] == ["preview", "result"]
    assert not yielded[0][2].any()  # nothing drawn this far from the paint
    assert yielded[1][2][12:28, 14:28].mean() > 0.5  # the whole volume's result has the column there
    assert np.asarray(widget.session.prediction.data)[far, 12:28, 14:28].mean() > 0.5


def test_near_paint_keeps_each_class_painted_within_reach():
    from napari_fewshot.core.postprocess import near_paint

    plane = np.zeros((4, 4), np.uint8)
    plane[0, :2], plane[1, :2], plane[2, :2] = 3, 7, 9  # label values
    targets = {10: np.array([[1, 0], [0, -1]]), 20: np.array([[2, 0], [0, 0]]), 14: np.zeros((2, 2), int)}
    kept = near_paint(plane, 15, targets, class_ids=[3, 7, 9], reach=5)  # slice 10 (class 3) and 20 (class 7)
    assert set(np.unique(kept)) == {0, 3, 7} and kept.dtype == plane.dtype
    assert set(np.unique(near_paint(plane, 4, targets, class_ids=[3, 7, 9], reach=5))) == {0}
    assert np.array_equal(near_paint(plane, 12, targets, [3, 7, 9], reach=2), np.where(plane == 3, 3, 0))
