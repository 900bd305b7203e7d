"""Each bad input of issue #5, driven through the dock widget: one plain sentence, the paint untouched.

Inputs the engine can use (colour stacks, a single 2D image, NaN/Inf voxels, labels beyond uint8, ...)
must segment without any error instead. napari itself refuses float Labels layers and turns boolean
ones into uint8, so a float support cannot reach the widget; the boolean case is covered as uint8.
"""

import re

import numpy as np
import pytest
from conftest import wait_idle

pytestmark = pytest.mark.gui


def blob_volume(shape=(6, 48, 48), dtype=np.float32):
    """(S, H, W) noise with a bright square on every slice."""
    volume = np.random.default_rng(0).normal(20, 5, shape).astype(dtype)
    volume[:, 14:34, 12:30] += 100
    return volume


def square(data, z, value=1):
    data[z, 14:34, 12:30] = value


@pytest.fixture
def scan(make_napari_viewer):
    """Returns open(image, **kwargs) -> (viewer, widget): the image as layer 'scan', the widget docked."""
    from napari_fewshot.plugin.widget import FewShotWidget

    def open_image(image, **kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(image, name="scan", **kwargs)
        widget = FewShotWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.ui.settings["device"].value = "cpu"
        return viewer, widget

    return open_image


def painted_support(widget, slices=(2,), value=1):
    support = widget.create_support_layer()
    for z in slices:
        square(support.data, z, value)
    support.refresh()
    return support


def labels_layer(viewer, widget, data, name="support"):
    layer = viewer.add_labels(data, name=name)
    widget.set_support_layer(layer)
    return layer


# -- inputs that must be refused with one sentence ---------------------------------------------------
def four_d(scan, **_):
    viewer, widget = scan(np.stack([blob_volume()] * 2))
    support = widget.create_support_layer()
    support.data[0, 2, 14:34, 12:30] = 1
    return viewer, widget, support, widget.segment


def tiny(scan, **_):
    viewer, widget = scan(np.random.default_rng(0).random((6, 5, 5)).astype(np.float32))
    support = widget.create_support_layer()
    support.data[2, 1:4, 1:4] = 1
    return viewer, widget, support, widget.segment


def support_of_another_shape(scan, **_):
    viewer, widget = scan(blob_volume())
    data = np.zeros((6, 48, 40), np.uint8)
    square(data, 2)
    return viewer, widget, labels_layer(viewer, widget, data), widget.segment


def negative_labels(scan, **_):
    viewer, widget = scan(blob_volume())
    data = np.zeros((6, 48, 48), np.int16)
    square(data, 2, -3)
    return viewer, widget, labels_layer(viewer, widget, data), widget.segment


def no_paint(scan, **_):
    viewer, widget = scan(blob_volume())
    return viewer, widget, widget.create_support_layer(), widget.segment


def every_slice_painted(scan, **_):
    viewer, widget = scan(blob_volume())
    return viewer, widget, painted_support(widget, slices=range(6)), widget.segment


def unknown_encoder(scan, **_):
    viewer, widget = scan(blob_volume())
    widget.ui.settings["encoder"].set_choice("no-such-encoder")
    widget.ui.settings["encoder"].value = "no-such-encoder"
    return viewer, widget, painted_support(widget), widget.segment


def weights_not_found_offline(scan, tmp_path, monkeypatch, **_):
    monkeypatch.setenv("NAPARI_FEWSHOT_VGG16_WEIGHTS", str(tmp_path / "vgg16-missing.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached download either
    viewer, widget = scan(blob_volume())
    widget.ui.settings["encoder"].value = "vgg16-panet"
    return viewer, widget, painted_support(widget), widget.segment


def export_target_not_writable(scan, tmp_path, qtbot, **_):
    viewer, widget, support = segmented(scan, qtbot)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    return viewer, widget, support, lambda: widget.export(str(blocker / "mask.nii.gz"))


def export_target_exists(scan, tmp_path, qtbot, **_):
    viewer, widget, support = segmented(scan, qtbot)
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"keep me")
    return viewer, widget, support, lambda: widget.export(str(target))


def segmented(scan, qtbot):
    viewer, widget = scan(blob_volume())
    support = painted_support(widget)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert widget.prediction_layer is not None
    return viewer, widget, support


REFUSED = {
    "4D image": (four_d, "has 4 dimensions"),
    "tiny image": (tiny, "at least 8 are needed"),
    # not offered in the Support picker (only the image's own supports and unowned Labels of its shape)
    "support of another shape": (support_of_another_shape, "Create or pick a support Labels layer"),
    "negative label values": (negative_labels, "negative label values"),
    "support with no paint": (no_paint, "has no painted pixels"),
    "support painted on every slice": (every_slice_painted, "Every slice is painted"),
    "unknown encoder": (unknown_encoder, "Unknown encoder 'no-such-encoder'"),
    "weights not found offline": (weights_not_found_offline, "does not exist"),
    "export path not writable": (export_target_not_writable, "is a file"),
    "export path exists": (export_target_exists, "exists; choose another name"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_gets_one_sentence_and_leaves_the_support_alone(case, scan, qtbot, notes, tmp_path, monkeypatch):
    make, expected = REFUSED[case]
    viewer, widget, support, action = make(scan, tmp_path=tmp_path, monkeypatch=monkeypatch, qtbot=qtbot)
    painted = support.data.copy()
    prediction = widget.prediction_layer
    layers_before = [layer.name for layer in viewer.layers]
    notes.clear()
    action()
    wait_idle(qtbot, widget)
    errors = [m for s, m in notes if s == "error"]
    assert len(errors) == 1, notes
    message = errors[0]
    assert expected in message
    assert "Traceback" not in message and "\n" not in message and message.endswith(".")
    assert not re.search(r"[.!?] [A-Z]", message), f"more than one sentence: {message}"
    np.testing.assert_array_equal(support.data, painted)
    assert support.data.dtype == painted.dtype
    assert [layer.name for layer in viewer.layers] == layers_before  # no prediction appeared
    assert widget.prediction_layer is prediction
    assert widget.ui.segment_button.isEnabled()  # and the widget is usable again


# -- inputs that must simply work ----------------------------------------------------------------------
def colour_stack(channels):
    def make(scan):
        rgb = np.repeat(blob_volume(dtype=np.uint8)[..., None], channels, axis=-1)
        rgb[..., 0] //= 2  # unequal channels: really colour
        if channels == 4:
            rgb[..., 3] = 255
        viewer, widget = scan(rgb, rgb=True)
        return viewer, widget, painted_support(widget)
    return make


def single_2d_image(scan):
    viewer, widget = scan(blob_volume()[0])
    support = widget.create_support_layer()
    support.data[20:28, 16:26] = 1  # the object
    support.data[2:8, :] = 2  # background, scribbled
    widget.ui.set_support_mode("scribble")
    widget.ui.settings["background_label"].value = 2
    return viewer, widget, support


def nan_and_inf_voxels(scan):
    volume = blob_volume()
    volume[1, :5, :5] = np.nan
    volume[4, 40:, 40:] = np.inf
    volume[5, 0, 0] = -np.inf
    viewer, widget = scan(volume)
    return viewer, widget, painted_support(widget)


def constant_image(scan):
    viewer, widget = scan(np.full((6, 48, 48), 7, np.int16))
    return viewer, widget, painted_support(widget)


def class_of_one_pixel(scan):
    viewer, widget = scan(blob_volume())
    support = painted_support(widget)
    support.data[2, 40, 40] = 2  # a second class painted in one place, one pixel
    return viewer, widget, support


def labels_beyond_uint8(scan):
    viewer, widget = scan(blob_volume())
    data = np.zeros((6, 48, 48), np.uint32)
    square(data, 2, 70_000)
    return viewer, widget, labels_layer(viewer, widget, data)


def boolean_support(scan):
    viewer, widget = scan(blob_volume())
    data = np.zeros((6, 48, 48), bool)
    square(data, 2, True)
    return viewer, widget, labels_layer(viewer, widget, data)


WORKS = {
    "RGB stack": (colour_stack(3), 1),
    "RGBA stack": (colour_stack(4), 1),
    "single 2D image": (single_2d_image, 1),
    "NaN and Inf voxels": (nan_and_inf_voxels, 1),
    "constant image": (constant_image, 1),
    "class painted in one pixel": (class_of_one_pixel, 1),
    "labels beyond uint8": (labels_beyond_uint8, 70_000),
    "boolean support": (boolean_support, 1),
}


@pytest.mark.parametrize("case", list(WORKS))
def test_usable_input_segments_without_complaint(case, scan, qtbot, notes):
    make, label = WORKS[case]
    viewer, widget, support = make(scan)
    painted = support.data.copy()
    notes.clear()
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert not [m for s, m in notes if s in ("error", "warning")], notes
    prediction = widget.prediction_layer
    assert prediction is not None and prediction.data.shape == support.data.shape
    assert label in prediction.data  # the class reaches the prediction with its own value
    np.testing.assert_array_equal(support.data, painted)


def test_every_slice_painted_is_refused_before_any_feature_is_computed(scan, qtbot, notes):
    """Session 15's walkthrough: on the CT sample with a stroke on each of its 112 slices, Segment computed every
    slice's features (2.5 minutes on a loaded 2-core machine) before saying that nothing was left to segment."""
    viewer, widget = scan(blob_volume())
    support = painted_support(widget, slices=range(6))
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert any(s == "error" and "Every slice is painted" in m for s, m in notes)
    cache = widget.session.segmenter.cache
    assert not any(i in cache for i in range(6))  # nothing was computed for a job that could not run
    assert support.data[:, 14:34, 12:30].all()
