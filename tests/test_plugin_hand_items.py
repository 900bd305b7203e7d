"""What a hand test of the widget found (issue 23 item 6), each checked in a real viewer on the CT sample:

(a) results sit on top of their own image, whatever the layer order was (Load prototypes on a second scan);
(b) a heatmap's colour bar is named: its class and what its numbers are (cosine similarity);
(c) ticking Heatmaps after a segmentation without them computes them from the painted support;
(d) the progress bar is honest: busy until the first report, each stage named with its own count (the
    support's features are not a stage of their own that reads 100 % at the start), empty and saying
    "cancelled" after a cancel.
"""


import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, LIVER, paint_support, use_input_size, wait_idle

pytestmark = pytest.mark.gui

SMALL_INPUT = 96  # px: features for the CT slices in seconds
SLICES = (76, 104)  # a range through the painted liver slices (79, 90, 100)


@pytest.fixture
def quick_ct(ct):
    viewer, widget, reference = ct
    use_input_size(widget, SMALL_INPUT)
    return viewer, widget, reference


def bar_states(qtbot, widget):
    """Every (value, maximum, text) the widget's progress bar shows, sampled every 5 ms while the test runs."""
    from qtpy.QtCore import QTimer

    bar, seen = widget.ui.progress_bar, []

    def sample():
        state = (bar.value(), bar.maximum(), bar.text())
        if not seen or seen[-1] != state:
            seen.append(state)

    timer = QTimer(widget)
    timer.timeout.connect(sample)
    timer.start(5)
    return seen


def test_a_bank_result_lies_above_its_image_even_when_the_image_was_moved_to_the_top(quick_ct, qtbot, tmp_path):
    from test_plugin_bank import paint_and_save_bank

    viewer, widget, reference = quick_ct
    *_, bank = paint_and_save_bank(widget, reference, qtbot, tmp_path)
    first = viewer.layers[CT_IMAGE_NAME]
    second = viewer.add_image(np.array(first.data[70:90]), name="second scan", scale=first.scale)
    widget.set_image_layer(second)
    own_support = widget.create_support_layer()  # the second scan's (empty) support, on top of the list
    viewer.layers.move(viewer.layers.index(second), len(viewer.layers))  # the user drags the scan to the top
    assert viewer.layers.index(second) > viewer.layers.index(own_support)
    widget.ui.heatmap_check.setChecked(True)
    widget.load_prototypes(str(bank))
    wait_idle(qtbot, widget, timeout_s=300)
    ll = viewer.layers
    prediction, heatmaps = widget.prediction_layer, list(widget.heatmap_layers.values())
    assert prediction is not None and heatmaps
    assert all(ll.index(layer) > ll.index(second) for layer in (prediction, *heatmaps)), [ly.name for ly in ll]
    assert ll.index(prediction) > max(ll.index(h) for h in heatmaps)  # the outline over the heatmaps


def test_heatmap_colour_bar_names_its_class_and_value_and_ticking_heatmaps_computes_them(quick_ct, qtbot):
    viewer, widget, reference = quick_ct
    support = paint_support(widget, reference)
    data = support.data
    for z in (90, 100):  # and a second class on two of those slices: two colour bars, two titles
        data[z][reference[z] == 2] = 2
    support.data = data
    widget.segment("range", *SLICES)  # Heatmaps not ticked
    wait_idle(qtbot, widget, timeout_s=300)
    assert widget.prediction_layer is not None and not widget.heatmap_layers
    widget.ui.heatmap_check.setChecked(True)  # (c) computed now, not at the next Segment
    wait_idle(qtbot, widget, timeout_s=300)
    heat = widget.heatmap_layers.get(LIVER)
    assert heat is not None and heat.visible and heat.data[SLICES[0]:SLICES[1] + 1].any()
    # (b) the colour bar's corner shows the layer's name: the class and what its numbers are
    assert heat.colorbar.visible and heat.name == "liver (1): cosine similarity"
    assert heat.name_overlay.visible and heat.name_overlay.position == heat.colorbar.position
    assert len(widget.heatmap_layers) >= 2
    boxes = drawn_overlay_boxes(viewer)  # every class's title and bar on the canvas, none over another
    assert len(boxes) >= 2 * len(widget.heatmap_layers)
    width, height = viewer.window._qt_viewer.canvas.size[::-1]
    assert all(0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height for x0, y0, x1, y1 in boxes), (boxes, width)
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]], boxes
    widget.ui.heatmap_check.setChecked(False)
    assert not heat.visible  # a hidden layer shows neither its colour bar nor its name


def drawn_overlay_boxes(viewer) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) in canvas pixels of every visible canvas overlay, where napari's canvas placed it."""
    canvas = viewer.window._qt_viewer.canvas
    canvas._update_overlay_canvas_positions()
    boxes = []
    for _, visual, _ in canvas._get_ordered_visible_canvas_overlays():
        x, y = visual.node.transform.translate[:2]
        boxes.append((float(x), float(y), float(x + visual.x_size), float(y + visual.y_size)))
    return boxes


def test_ticking_heatmaps_without_paint_says_when_they_will_appear(quick_ct, qtbot):
    viewer, widget, reference = quick_ct
    paint_support(widget, reference)
    widget.segment("range", *SLICES)
    wait_idle(qtbot, widget, timeout_s=300)
    support = widget.support_layer
    support.data = np.zeros_like(support.data)  # nothing painted any more
    widget.ui.heatmap_check.setChecked(True)
    assert not widget.busy and not widget.heatmap_layers
    assert "next Segment" in widget.ui.status_label.text()


def test_progress_bar_names_the_job_first_counts_each_stage_and_says_cancelled(quick_ct, qtbot):
    """The bar starts still at 0 with the job's name (a busy bar animates, and every frame redraws the window:
    plugin/activity.py), never at the last job's 100 %; then each stage's count, then how the job ended."""
    viewer, widget, reference = quick_ct
    paint_support(widget, reference)
    seen = bar_states(qtbot, widget)
    widget.segment("range", *SLICES)
    wait_idle(qtbot, widget, timeout_s=300)
    qtbot.waitUntil(lambda: seen[-1] == (1, 1, "done"), timeout=5_000)  # the sampler's next tick sees the end
    assert seen[0] == (0, 1, "Segmenting...")  # the job's name until the first report, never the last job's 100 %
    reports = [s for s in seen[1:-1] if s[1] > 0]
    assert reports and all(": " in text and " of " in text for _, _, text in reports), reports
    first_stage = reports[0][2].split(":")[0]
    assert first_stage == "features" and reports[0][0] < reports[0][1], reports  # not 3 of 3 (100 %) first
    for (v0, m0, t0), (v1, m1, t1) in zip(reports, reports[1:]):  # within a stage the count only grows
        if t0.split(":")[0] == t1.split(":")[0]:
            assert m1 == m0 and v1 >= v0, (t0, t1)

    seen.clear()
    widget.segment("range", 40, 110)
    qtbot.waitUntil(lambda: any(" of " in text for _, _, text in seen), timeout=120_000)
    widget.cancel()
    wait_idle(qtbot, widget, timeout_s=300)
    qtbot.waitUntil(lambda: seen[-1] == (0, 1, "cancelled"), timeout=5_000)
    assert widget.ui.status_label.text() == "Segmenting: cancelled."
