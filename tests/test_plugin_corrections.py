"""The correction loop in napari: paint 3 liver slices, Segment all, correct a predicted slice with a real
brush stroke on the canvas (it starts from the prediction), undo it, segment again; Accept slice, Check next
(keys Shift+A / Shift+N), scribble mode (no seeding), and an image set (seeding per image)."""

import numpy as np
import pytest
from conftest import LIVER, LIVER_SUPPORT_SLICES, paint_support, wait_idle
from gui_driver import canvas_drag
from scipy import ndimage

from napari_fewshot.core import dice

pytestmark = pytest.mark.gui

BRUSH = 7
WAIT_S = 600  # the project machine has 2 cores, often shared by several test runs


# -- driving napari's canvas like a mouse ---------------------------------------------------------
def canvas_stroke(viewer, layer, index, points, label=1, mode="paint", brush=BRUSH):
    """A real drag of napari's ``mode`` tool on the canvas (see tests/gui_driver.py)."""
    canvas_drag(viewer, layer, index, points, label, mode, brush)


def press_key(viewer, key):
    """A key press as the canvas handles it (the active layer's keymap first, then the viewer's)."""
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def near(points, shape, radius):
    """Pixels within ``radius`` of the polyline through ``points`` (where a stroke may change pixels)."""
    line = np.zeros(shape, bool)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
        n = max(abs(r1 - r0), abs(c1 - c0), 1) * 2 + 1
        line[np.round(np.linspace(r0, r1, n)).astype(int), np.round(np.linspace(c0, c1, n)).astype(int)] = True
    return ndimage.binary_dilation(line, iterations=radius)


def missed_run(prediction, truth, margin):
    """The longest horizontal run (<= 40 px) of liver pixels the prediction missed, at least ``margin`` px inside
    the reference liver: a brush stroke along it only adds true liver. Returns (length, points)."""
    inside = ndimage.binary_erosion(truth, iterations=margin)
    candidates = inside & ~prediction
    best = (0, None)
    for row in np.nonzero(candidates.any(1))[0]:
        cols = np.nonzero(candidates[row])[0]
        runs = np.split(cols, np.nonzero(np.diff(cols) != 1)[0] + 1)
        run = max(runs, key=len)[:40]
        if len(run) > best[0]:
            best = (len(run), [(int(row), int(run[0])), (int(row), int(run[len(run) // 2])), (int(row), int(run[-1]))])
    return best


def imperfect_slice(prediction, reference, painted):
    """A predicted slice whose liver is imperfect and has a missed run to stroke along: (slice, points)."""
    options = []
    for z in range(len(prediction)):
        if z in painted or not (prediction[z] == LIVER).any():
            continue
        length, points = missed_run(prediction[z] == LIVER, reference[z] == LIVER, BRUSH // 2 + 3)
        if length >= 12 and dice(prediction[z] == LIVER, reference[z] == LIVER) < 0.95:
            options.append((length, z, points))
    assert options, "no predicted slice with a missed liver region to correct"
    _, z, points = max(options)
    return z, points


def slice_dice(labels, reference, z):
    return dice(labels[z] == LIVER, reference[z] == LIVER)


# -- tests ------------------------------------------------------------------------------------------
def test_stroke_on_a_predicted_slice_starts_from_the_prediction(ct, qtbot, monkeypatch):
    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    prediction = widget.prediction_layer.data.copy()
    z, points = imperfect_slice(prediction, reference, LIVER_SUPPORT_SLICES)
    before = slice_dice(prediction, reference, z)

    canvas_stroke(viewer, support, z, points, LIVER)
    corrected = support.data[z].copy()
    after = slice_dice(support.data, reference, z)
    print(f"slice {z}: liver Dice {before:.3f} (prediction) -> {after:.3f} (after one correction stroke)")
    assert after > before
    changed = corrected != prediction[z]
    assert changed.any() and (corrected[changed] == LIVER).all()  # the stroke's pixels take its label...
    assert not (changed & ~near(points, changed.shape, BRUSH)).any()  # ...and no pixel it did not touch changes
    assert widget.ui.status_label.text() == (f"Slice {z} now counts as support: it started from the prediction and "
                                             "your stroke corrected it (Ctrl+Z undoes both).")
    others = [i for i in range(len(prediction)) if i != z]
    np.testing.assert_array_equal(support.data[LIVER_SUPPORT_SLICES,], reference[LIVER_SUPPORT_SLICES,] == LIVER)
    assert not support.data[[i for i in others if i not in LIVER_SUPPORT_SLICES]].any()

    support.undo()  # one Ctrl+Z: the stroke and the seeding
    assert not support.data[z].any()
    support.redo()
    np.testing.assert_array_equal(support.data[z], corrected)

    widget.segment("all")  # segment again: the corrected slice is support now and stays exactly as corrected
    wait_idle(qtbot, widget, WAIT_S)
    np.testing.assert_array_equal(widget.prediction_layer.data[z], corrected)
    assert widget.session.last_result.check_order().count(z) == 0

    # the eraser works on the prediction too (an erase on an empty slice would change nothing)
    prediction = widget.prediction_layer.data.copy()
    unpainted = [i for i in others if i not in LIVER_SUPPORT_SLICES]
    unpainted.sort(key=lambda i: -(prediction[i] == LIVER).sum())
    y, w = unpainted[:2]  # the two unpainted slices with the most predicted liver
    rows, cols = np.nonzero(prediction[y] == LIVER)
    centre = (int(np.median(rows)), int(np.median(cols)))
    erase = [centre, (centre[0], centre[1] + 10)]
    canvas_stroke(viewer, support, y, erase, mode="erase")
    changed = support.data[y] != prediction[y]
    assert changed.any() and (support.data[y][changed] == 0).all()
    assert not (changed & ~near(erase, changed.shape, BRUSH)).any()

    # so does the fill: it fills the predicted region clicked on
    v = unpainted[2]
    rows, cols = np.nonzero(prediction[v] == LIVER)
    click = (int(rows[len(rows) // 2]), int(cols[len(rows) // 2]))
    canvas_stroke(viewer, support, v, [click], label=2, mode="fill")
    regions, _ = ndimage.label(prediction[v] == LIVER)  # napari fills the 4-connected region
    np.testing.assert_array_equal(support.data[v], np.where(regions == regions[click], 2, prediction[v]))
    support.undo()
    assert not support.data[v].any()

    # without napari's private undo history the seeding and the stroke are two undo steps, and the status says so
    from napari_fewshot.plugin import corrections

    monkeypatch.setattr(corrections, "last_undo_item", lambda layer: None)
    rows, cols = np.nonzero(prediction[w] == LIVER)
    canvas_stroke(viewer, support, w, [(int(np.median(rows)), int(np.median(cols)))], label=2)
    assert "(Ctrl+Z twice undoes both)" in widget.ui.status_label.text()
    assert (support.data[w] == 2).any()
    support.undo()
    np.testing.assert_array_equal(support.data[w], prediction[w])
    support.undo()
    assert not support.data[w].any()


def test_check_next_accept_slice_and_scribbles(ct, qtbot):
    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    assert not widget.ui.check_next_button.isEnabled()
    assert widget.corrections.check_next() is None
    widget.segment("current")  # a per-slice result does not order the checks
    wait_idle(qtbot, widget, WAIT_S)
    assert not widget.ui.check_next_button.isEnabled()
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    assert widget.ui.check_next_button.isEnabled()
    result = widget.session.last_result
    order = result.check_order()
    assert len(order) > 10 and not set(order) & set(LIVER_SUPPORT_SLICES)
    assert result.uncertainty[order[0]] >= result.uncertainty[order[-1]]

    press_key(viewer, "Shift-N")  # with the support (a Labels layer) active
    assert widget.current_slice() == order[0]
    assert widget.ui.status_label.text().startswith(f"Slice {order[0]}: the least sure of {len(order)} left")
    painted = order[1]
    support.data_setitem((np.full(3, painted), np.array([50, 50, 51]), np.array([60, 61, 60])), LIVER)
    assert (support.data[painted] != 0).sum() == 3  # a script's edit is never seeded
    widget.ui.check_next_button.click()  # skips the slice painted meanwhile
    assert widget.current_slice() == order[2]

    predicted = widget.prediction_layer.data.astype(bool).sum((1, 2))
    print("check order (slice, expected wrong pixels, predicted pixels):",
          [(i, round(result.uncertainty[i]), int(predicted[i])) for i in order[:8]])

    prediction = widget.prediction_layer.data
    accepted = next(i for i in order[3:] if prediction[i].any())
    viewer.dims.set_current_step(0, accepted)
    press_key(viewer, "Shift-A")  # Accept slice: the prediction becomes support, one undo step
    np.testing.assert_array_equal(support.data[accepted], prediction[accepted])
    assert widget.ui.status_label.text() == f"Slice {accepted} now counts as support, as predicted (Ctrl+Z undoes it)."
    assert not widget.corrections.accept_slice()  # a painted slice counts as support already
    assert widget.ui.status_label.text() == f"Slice {accepted} is painted already: it counts as support as it is."
    support.undo()
    assert not support.data[accepted].any()
    viewer.dims.set_current_step(0, 5)  # below the liver, nothing predicted: Accept marks it free of every class
    assert not prediction[5].any() and widget.corrections.accept_slice()
    assert support.metadata["napari_fewshot_empty_slices"] == [5]
    assert widget.corrections.accept_slice()  # and again takes the mark back
    assert support.metadata["napari_fewshot_empty_slices"] == []

    while widget.corrections.check_next() is not None:
        pass
    assert widget.session.checked == set(order) - {painted}
    assert widget.ui.status_label.text().startswith("Every predicted slice has been checked or painted")

    # scribble mode: unpainted pixels are ignored already, so a stroke is just the stroke
    widget.ui.set_support_mode("scribble")
    widget.ui.settings["background_label"].value = 3
    z = accepted
    rows, cols = np.nonzero(prediction[z] == LIVER)
    canvas_stroke(viewer, support, z, [(int(np.median(rows)), int(np.median(cols)))], label=2)
    scribble = support.data[z] == 2
    assert 0 < scribble.sum() < BRUSH * BRUSH and not (support.data[z] == 3).any() and not (support.data[z] == 1).any()
    # Accept slice in scribble mode: the scribble stays, the predicted background gets the background label
    assert widget.corrections.accept_slice()
    accepted_plane = np.where(prediction[z] == 0, 3, prediction[z])
    np.testing.assert_array_equal(support.data[z], np.where(scribble, 2, accepted_plane))

    widget.close()  # the viewer forgets the widget's mouse callback and keys
    assert not any("Corrections" in repr(callback) for callback in viewer.mouse_drag_callbacks)
    assert not {"Shift+A", "Shift+N"} & {str(key) for key in viewer.keymap}


def _blob_folder(tmp_path):
    """Six grey PNGs of different sizes, each with a bright disk (the "lesion") at its own place."""
    from PIL import Image

    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    masks = []
    for i, (h, w) in enumerate([(90, 110), (100, 96), (80, 120), (96, 104), (110, 90), (84, 100)]):
        rows, cols = np.mgrid[:h, :w]
        mask = (rows - h / 2 - 5 * (i % 3)) ** 2 + (cols - w / 2 + 4 * i) ** 2 < 22**2
        pixels = np.where(mask, 190, 50) + rng.normal(0, 8, (h, w))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"scan{i}.png")
        masks.append(mask)
    return folder, masks


def test_image_set_stroke_starts_from_the_image_prediction(make_napari_viewer, qtbot, tmp_path):
    from napari_fewshot.plugin import IMAGE_SET_KEY

    folder, masks = _blob_folder(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-fewshot")
    image = viewer.layers["scans"]
    info = image.metadata[IMAGE_SET_KEY]
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data = support.data
    for i in (0, 1):
        h, w = info.shapes[i]
        data[i, :h, :w] = masks[i]
    support.data = data
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    prediction = widget.prediction_layer.data.copy()
    i = 3
    h, w = info.shapes[i]
    assert dice(prediction[i, :h, :w] == 1, masks[i]) > 0.8
    rows, cols = np.nonzero(prediction[i] == 1)
    stroke = [(int(rows.mean()), int(cols.mean()) - 8), (int(rows.mean()), int(cols.mean()) + 8)]
    canvas_stroke(viewer, support, i, stroke, mode="erase")
    changed = support.data[i] != prediction[i]
    assert changed.any() and (support.data[i][changed] == 0).all()
    assert not (changed & ~near(stroke, changed.shape, BRUSH)).any()
    assert not support.data[i, h:].any() and not support.data[i, :, w:].any()  # the padding stays empty
    assert widget.ui.status_label.text().startswith(f"Image {info.names[i]} now counts as support")
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    np.testing.assert_array_equal(widget.prediction_layer.data[i], support.data[i])


# -- slices free of every class ---------------------------------------------------------------------
def sweep(mask, margin=3):
    """One eraser stroke that clears ``mask``: a horizontal drag through its bounding box's middle row (its ends a brush
    radius beyond the box), with a round brush (data pixels) as tall as the box plus ``margin`` on each side.
    Returns (points, brush size): one move only, as napari throttles mouse moves (5 ms) and a synthetic drag's later
    moves may come too fast to be painted."""
    rows, cols = np.nonzero(mask)
    middle = (int(rows.min()) + int(rows.max())) // 2
    brush = 2 * max(middle - int(rows.min()), int(rows.max()) - middle) + 2 * margin + 1
    start, end = max(int(cols.min()) - brush // 2, 0), min(int(cols.max()) + brush // 2, mask.shape[1] - 1)
    return [(middle, start), (middle, end)], brush


def test_erasing_a_whole_false_positive_marks_the_slice_free(ct, qtbot):
    from napari_fewshot.plugin import EMPTY_SLICES_KEY

    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    prediction = widget.prediction_layer.data.copy()
    unpainted = [i for i in range(len(prediction)) if i not in LIVER_SUPPORT_SLICES and prediction[i].any()]
    false = [i for i in unpainted if not (reference[i] == LIVER).any() and (prediction[i] == LIVER).any()]
    # the largest false positive one stroke can clear (the one most likely to come back); with none, the slice with
    # the least predicted liver, erased all the same
    small = [i for i in false if np.ptp(np.nonzero(prediction[i])[0]) <= 30]
    small = small or [min(unpainted, key=lambda i: prediction[i].sum())]
    z = max(small, key=lambda i: (prediction[i] != 0).sum())
    print(f"slice {z}: {(prediction[z] != 0).sum()} predicted pixels, {(reference[z] == LIVER).sum()} reference liver "
          f"pixels; false-positive slices: {false}")

    points, brush = sweep(prediction[z] != 0)
    canvas_stroke(viewer, support, z, points, mode="erase", brush=brush)
    assert not support.data[z].any()
    assert support.metadata[EMPTY_SLICES_KEY] == [z]
    assert widget.ui.status_label.text() == (f"Slice {z} marked as free of every class: you erased all of its "
                                             "prediction, so it now counts as support (background) (Ctrl+Z undoes it).")
    support.undo()  # the erase and its seeding: the slice is back to unpainted and unmarked
    assert widget.corrections.empty_slices() == () and support.metadata[EMPTY_SLICES_KEY] == []
    support.redo()
    assert widget.corrections.empty_slices() == (z,) and support.metadata[EMPTY_SLICES_KEY] == [z]
    assert widget._job(need_support=True).empty_slices == (z,)

    painted = support.data.copy()
    widget.segment("all")
    wait_idle(qtbot, widget, WAIT_S)
    again = widget.prediction_layer.data
    assert not again[z].any()  # the false positive does not come back
    assert support.metadata[EMPTY_SLICES_KEY] == [z]
    np.testing.assert_array_equal(support.data, painted)
    for i in LIVER_SUPPORT_SLICES:
        np.testing.assert_array_equal(again[i], prediction[i])  # painted slices unchanged
    assert z not in widget.session.last_result.check_order()  # support now: Check next skips it


def test_accept_slice_on_an_empty_prediction_marks_the_slice(ct, qtbot):
    from napari_fewshot.plugin import EMPTY_SLICES_KEY

    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    # a stand-in prediction (no segmentation needed): liver on slice 90 only
    predicted = np.zeros_like(support.data)
    predicted[90] = support.data[90]
    widget.session.prediction = viewer.add_labels(predicted, name="prediction", scale=widget.image_layer.scale)
    viewer.layers.selection.active = support
    viewer.dims.set_current_step(0, 5)
    press_key(viewer, "Shift-A")
    assert support.metadata[EMPTY_SLICES_KEY] == [5] and not support.data[5].any()
    assert widget.ui.status_label.text() == ("Slice 5 marked as free of every class; it now counts as support "
                                             "(background). Accept slice (Shift+A) again takes the mark back.")
    job = widget._job(need_support=True)
    assert job.empty_slices == (5,)
    viewer.dims.set_current_step(0, 3)
    assert widget.corrections.accept_slice()
    assert support.metadata[EMPTY_SLICES_KEY] == [3, 5]
    widget.ui.set_support_mode("scribble")  # marks are a dense-mode notion: scribble jobs ignore them
    assert widget._job(need_support=True).empty_slices == ()
    assert widget.corrections.accept_slice() is False
    assert widget.ui.status_label.text() == "Slice 3 has no predicted labels to accept."
    widget.ui.set_support_mode("dense")
    assert widget.corrections.accept_slice()  # again: the mark is taken back
    assert support.metadata[EMPTY_SLICES_KEY] == [5]
    assert widget.ui.status_label.text() == ("Slice 3 is no longer marked as free of every class; unpainted, it is "
                                             "not support any more.")
    viewer.dims.set_current_step(0, 90)
    assert not widget.corrections.accept_slice()  # a painted slice: nothing to mark
    assert support.metadata[EMPTY_SLICES_KEY] == [5]
