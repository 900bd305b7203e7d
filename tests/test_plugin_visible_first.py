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
