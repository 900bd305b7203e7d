"""A result into the prediction layer with one redraw (plugin/layers.py update_prediction; issue 21, session 17
"draw"): an existing prediction gets the new labels written into its own array, its colormap is set only when
the support's differs, and the slice shown is refreshed once. Replacing the data and setting the colormap redrew
it twice more (~40 ms of the Qt thread on a 512 x 512 x 100 scan, each time a correction's coarse result came)."""

import numpy as np
import pytest
from conftest import LIVER, ct_crop

pytestmark = pytest.mark.gui


def _counted(layer):
    counts = {"data": 0, "set_data": 0, "colormap": 0}
    for name in counts:
        getattr(layer.events, name).connect(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


def test_a_new_result_is_written_in_place_with_one_redraw(make_napari_viewer):
    from napari.utils.colormaps import CyclicLabelColormap

    from napari_fewshot.plugin import layers

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((6, 40, 50), np.float32))
    support = layers.create_support(viewer, image)
    first = np.zeros((6, 40, 50), np.uint8)
    first[:, 5:20, 5:25] = 1
    prediction = layers.update_prediction(viewer, image, support, None, first, None)
    array = prediction.data
    counts = _counted(prediction)
    second = np.zeros_like(first)
    second[:, 10:30, 20:45] = 2
    second[3] = 0
    shown = layers.update_prediction(viewer, image, support, prediction, second, None)
    assert shown is prediction and shown.data is array  # written into the layer's own array
    np.testing.assert_array_equal(shown.data, second)
    assert counts == {"data": 0, "set_data": 1, "colormap": 0}  # one redraw (before: a data event and three)
    assert shown.colormap == support.colormap

    third = second.copy()
    third[2] = 1
    layers.update_prediction(viewer, image, support, prediction, third, [2])  # some slices: as before
    np.testing.assert_array_equal(prediction.data, third)
    support.colormap = CyclicLabelColormap(colors=layers.PALETTE[[0, 3, 2, 1]])  # the support's colours change
    layers.update_prediction(viewer, image, support, prediction, third, None)
    assert counts["colormap"] == 1 and prediction.colormap == support.colormap  # the prediction follows them

    frozen = np.zeros_like(first)  # an array napari's layer cannot write into: replaced as before
    frozen.setflags(write=False)
    prediction.data = frozen
    layers.update_prediction(viewer, image, support, prediction, first, None)
    np.testing.assert_array_equal(prediction.data, first)


@pytest.fixture
def crop(make_napari_viewer):
    """The widget over 6 slices of the CT sample (refinement off: the coarse result is the result), the liver
    painted on slices 0 and 5. Returns (viewer, widget, support, reference liver (6, H, W))."""
    return ct_crop(make_napari_viewer, 78, 84, False, (0, 5), 2)


def test_after_a_correction_the_prediction_holds_the_results_labels_and_undo_still_works(crop, qtbot, monkeypatch):
    from napari_fewshot.plugin import results

    viewer, widget, support, reference = crop
    shown = []
    show = results.show
    monkeypatch.setattr(results, "show", lambda *a, **k: shown.append(show(*a, **k)) or shown[-1])
    widget.segment("all")
    qtbot.waitUntil(lambda: not widget.busy, timeout=600_000)
    prediction = widget.prediction_layer
    array = prediction.data
    np.testing.assert_array_equal(prediction.data, shown[-1].labels)

    prediction.paint((2, 30, 30), LIVER, refresh=True)  # the user edits the prediction itself (napari's history)
    data = support.data  # a correction: the reference of slice 3 painted, then Segment again
    data[3] = reference[3]
    support.data = data
    painted = support.data.copy()
    widget.segment("all")
    qtbot.waitUntil(lambda: not widget.busy, timeout=600_000)
    assert widget.prediction_layer is prediction and prediction.data is array  # the same layer, written in place
    np.testing.assert_array_equal(prediction.data, shown[-1].labels)  # exactly the result's labels
    np.testing.assert_array_equal(prediction.data[3], reference[3])  # the corrected slice is the paint
    np.testing.assert_array_equal(support.data, painted)  # nothing the user drew changed
    result = prediction.data.copy()
    prediction.undo()  # napari's undo of that edit still works on the rewritten array: only the brush's pixels
    changed = np.argwhere(prediction.data != result)
    assert (changed[:, 0] == 2).all() and (np.abs(changed[:, 1:] - 30) <= prediction.brush_size).all()
