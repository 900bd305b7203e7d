"""Explain in a real viewer: a false positive's provenance leads to the painting that caused it.

The clinician paints the liver on three slices of the CT sample and, on slice 100, slips onto the spleen.
The spleen is then predicted as liver on the nearby slices. With Explain on, the provenance layer colours that
false positive by slice 100, hovering it says "looks like slice 100, painted liver", Shift+J goes to the cross
on the painted spleen; erasing that paint and segmenting again removes the false positive.
"""

import time

import numpy as np
import pytest

from conftest import LIVER, LIVER_SUPPORT_SLICES, paint_support, wait_idle
from napari_fewshot.plugin.explain import ORIGIN_NAME, PROVENANCE_NAME

pytestmark = pytest.mark.gui

SPLEEN = 2  # in the CT sample's reference
SLIP_SLICE = 100


def hover(viewer, layer, index: int, row: int, col: int, modifiers=()) -> None:
    """A real mouse move over data pixel (row, col) of slice `index` (vispy event: napari's callbacks run)."""
    viewer.dims.set_current_step(0, index)
    canvas = viewer.window._qt_viewer.canvas
    world = layer.data_to_world([index, row, col])
    pos = np.round((canvas.view.transform * canvas.view.scene.transform).map([world[-1], world[-2]])[:2]).astype(int)
    time.sleep(0.01)  # napari handles at most one mouse move every 5 ms
    canvas._scene_canvas.events.mouse_move(pos=pos, button=None, modifiers=modifiers)


def false_positive(widget, reference) -> np.ndarray:
    """(S, H, W) bool: spleen predicted as liver, off the painted slices."""
    wrong = (np.asarray(widget.prediction_layer.data) == LIVER) & (reference == SPLEEN)
    wrong[list(LIVER_SUPPORT_SLICES)] = False
    return wrong


def test_a_false_positive_leads_to_the_painting_that_caused_it(ct, qtbot):
    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    slip = reference[SLIP_SLICE] == SPLEEN
    data = support.data
    data[SLIP_SLICE][slip] = LIVER
    support.data = data
    widget.ui.explain_check.setChecked(True)
    widget.segment()
    wait_idle(qtbot, widget, timeout_s=900)
    wrong = false_positive(widget, reference)
    assert wrong.sum() > 500, "the slip did not make a false positive to explain"

    provenance = viewer.layers[PROVENANCE_NAME].data
    share = float((provenance[wrong] == SLIP_SLICE + 1).mean())
    assert share >= 0.9, share  # the layer colours the false positive by the slice with the slip
    predicted = np.asarray(widget.prediction_layer.data) == LIVER
    predicted[list(LIVER_SUPPORT_SLICES)] = False
    assert np.array_equal(provenance[predicted] > 0, np.ones(predicted.sum(), bool))

    z = int(np.argmax(wrong.sum(axis=(1, 2))))
    ys, xs = np.nonzero(wrong[z])
    y, x = int(np.median(ys)), int(np.median(xs))
    hover(viewer, widget.image_layer, z, y, x)
    qtbot.waitUntil(lambda: widget.explain.text.startswith(f"looks like slice {SLIP_SLICE}, painted"))
    assert widget.ui.status_label.text() == widget.explain.text
    qtbot.waitUntil(lambda: "looks like slice" in str(viewer.status))  # kept when napari rewrites its status
    origin = widget.explain.origin
    oy, ox = origin.pixel
    assert slip[max(0, oy - 2):oy + 3, max(0, ox - 2):ox + 3].any(), "the cross is not on the slip"
    assert np.array_equal(viewer.layers[ORIGIN_NAME].data, [[SLIP_SLICE, oy, ox]])

    widget.explain.jump()
    assert widget.current_slice() == SLIP_SLICE
    widget.explain.jump()
    assert widget.current_slice() == z

    data = support.data
    data[SLIP_SLICE][slip] = 0  # erase the slip, segment again
    support.data = data
    widget.segment()
    wait_idle(qtbot, widget, timeout_s=900)
    after = false_positive(widget, reference)
    assert after.sum() <= 0.1 * wrong.sum(), (int(after.sum()), int(wrong.sum()))


def test_explain_off_leaves_the_mouse_alone(ct):
    viewer, widget, _ = ct
    widget.ui.explain_check.setChecked(True)
    assert widget.explain._on_move in viewer.mouse_move_callbacks
    widget.ui.explain_check.setChecked(False)
    assert widget.explain._on_move not in viewer.mouse_move_callbacks
    assert widget.explain._on_press not in viewer.mouse_drag_callbacks
    assert widget.explain.text == ""
