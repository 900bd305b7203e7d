"""The dock widget end to end on the CT sample: compute, segment, heatmaps, live mode, failures."""

import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, LIVER, LIVER_SUPPORT_SLICES, paint_support, wait_idle

from napari_fewshot.core import dice

pytestmark = pytest.mark.gui

# Liver Dice on the 109 held-out slices, 3 support slices, efficientnet-lite0, no fine-tuning, measured on
# this CPU: 0.846 at the default 384 px (0.82 at 256 px) with the core's 3D post-processing and slice
# smoothing, 0.63 without them (256 px). The floor sits below both, leaving room for numeric noise between machines.
DICE_FLOOR = 0.60


def _count_encoder_calls(widget):
    """Forward calls of the current segmenter's encoder: a list that grows by one per batch."""
    calls = []
    widget.session.segmenter.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_compute_segment_heatmaps_on_ct_sample(ct, qtbot, notes):
    viewer, widget, reference = ct
    image = viewer.layers[CT_IMAGE_NAME]
    assert widget.image_layer.name == CT_IMAGE_NAME
    assert widget.ui.model_label.text().startswith("Using efficientnet-lite0 (auto) on cpu")
    support = paint_support(widget, reference)
    assert widget.support_layer.name == "support"
    assert support.data.shape == image.data.shape and np.allclose(support.scale, image.scale)
    painted = support.data.copy()

    viewer.dims.set_current_step(0, 85)
    widget.compute_features()
    assert widget.busy and not widget.ui.segment_button.isEnabled()  # conflicting buttons are off
    wait_idle(qtbot, widget)
    assert widget.ui.segment_button.isEnabled()
    assert any(s == "info" and "Features ready for 112 slices" in m for s, m in notes)
    assert len(widget.session.segmenter.cache) == 112
    assert (widget.prediction_layer.data[85] == LIVER).any()  # preview of the visible slice

    calls = _count_encoder_calls(widget)
    widget.ui.heatmap_check.setChecked(True)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert calls == []  # segmenting reused the cached features
    prediction = widget.prediction_layer
    assert prediction.name == "prediction" and prediction.data.shape == image.data.shape
    held = [z for z in range(image.data.shape[0]) if z not in LIVER_SUPPORT_SLICES]
    score = dice(prediction.data[held] == LIVER, reference[held] == LIVER)
    print(f"liver Dice on held-out slices: {score:.3f}")
    assert score >= DICE_FLOOR
    for z in LIVER_SUPPORT_SLICES:
        np.testing.assert_array_equal(prediction.data[z], support.data[z])
    np.testing.assert_allclose(prediction.colormap.map(np.arange(12)), support.colormap.map(np.arange(12)))

    heatmaps = widget.heatmap_layers
    assert list(heatmaps) == [LIVER]
    heat = heatmaps[LIVER]
    assert heat.name == "liver (1): cosine similarity"
    assert heat.data.shape == image.data.shape and heat.data.dtype == np.float32
    low, high = heat.contrast_limits  # per class, the support's own held-out levels (SegmentationResult.similarity_range)
    assert 0.0 < low < high <= 1.0 and heat.blending == "additive"
    # Every slice has its map (a slice left out would be 0 everywhere), painted ones included, and a painted
    # liver pixel's best match is its own prototype (cosine ~1): the map is this segmentation's similarity.
    assert (np.abs(heat.data).reshape(len(heat.data), -1).max(axis=1) > 0).all()
    for z in LIVER_SUPPORT_SLICES:
        assert heat.data[z][support.data[z] == LIVER].mean() > 0.9
    assert heat.data[held][reference[held] == LIVER].mean() > heat.data[held][reference[held] != LIVER].mean() + 0.1
    widget.ui.heatmap_check.setChecked(False)
    assert not heat.visible
    widget.ui.heatmap_check.setChecked(True)
    assert heat.visible

    assert viewer.layers[-1] is support or viewer.layers[-1].name == "support"  # still on top for painting
    np.testing.assert_array_equal(support.data, painted)  # the plugin never edits the support


def test_live_mode_resegments_the_visible_slice_without_recomputing(ct, qtbot):
    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    viewer.dims.set_current_step(0, 93)  # two slices from the spleen stroke below
    widget.segment("current")  # computes the features of the support slices and slice 93 only
    wait_idle(qtbot, widget)
    assert len(widget.session.segmenter.cache) == 4
    widget.segment("range", 95, 95)  # caches slice 95, painted below
    wait_idle(qtbot, widget)
    calls = _count_encoder_calls(widget)
    before = widget.prediction_layer.data.copy()
    assert (before[93] == LIVER).any() and not (before[93] == 2).any() and not before[70].any()

    widget.ui.live_check.setChecked(True)
    spleen = np.nonzero(reference[95] == 2)
    support.data_setitem((np.full_like(spleen[0], 95), *spleen), 2)  # a stroke: emits the paint event
    qtbot.waitUntil(lambda: (widget.prediction_layer.data[93] == 2).any(), timeout=20_000)
    wait_idle(qtbot, widget)
    assert calls == []  # strokes never rerun the encoder on cached slices
    assert not widget.prediction_layer.data[70].any()  # only the visible slice was re-segmented

    support.undo()  # napari's undo removes the stroke; live mode follows
    qtbot.waitUntil(lambda: not (widget.prediction_layer.data[93] == 2).any(), timeout=20_000)
    wait_idle(qtbot, widget)
    assert not (support.data == 2).any()

    # the feature cache survives switching to another image and back
    session, image = widget.session, widget.image_layer
    other = viewer.add_image(np.zeros((4, 32, 32), np.float32), name="other")
    widget.set_image_layer(other)
    assert widget.session is not session and widget.prediction_layer is None
    widget.set_image_layer(image)
    assert widget.session is session and len(session.segmenter.cache) == 5


def test_failures_notify_and_leave_support_alone(ct, qtbot, notes):
    _, widget, _ = ct
    assert widget.segment() is None  # no support layer yet
    assert any(s == "error" and "support" in m.lower() for s, m in notes)
    support = widget.create_support_layer()
    support.data[3, 5:9, 5:9] = 0
    painted = support.data.copy()
    notes.clear()
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert [m for s, m in notes if s == "error"] == [
        "The support has no painted pixels; paint at least one class on one slice."]
    assert widget.prediction_layer is None
    np.testing.assert_array_equal(support.data, painted)
    assert widget.ui.segment_button.isEnabled()  # the widget is usable again
    assert widget.segment("range", 100, 500) is None
    assert any("outside the image's slices 0-111" in m for _, m in notes)


def test_device_and_encoder_choosers(ct, notes):
    import torch

    _, widget, _ = ct
    widget.ui.settings["encoder"].value = "efficientnet-lite2"
    assert widget.ui.model_label.text().startswith("Using efficientnet-lite2 on cpu")
    if not torch.cuda.is_available():
        widget.ui.settings["device"].value = "cuda"
        assert widget.ui.settings["device"].value == "auto"
        assert any(s == "error" and "CUDA" in m for s, m in notes)


def test_single_rgb_image_with_scribbles(make_napari_viewer, qtbot, notes):
    """A 2D colour image (e.g. an ultrasound PNG): one slice, so the support is scribbles."""
    from napari_fewshot.plugin.widget import FewShotWidget

    viewer = make_napari_viewer()
    rgb = np.full((96, 128, 3), 40, np.uint8)
    rgb[30:70, 20:60] = (200, 180, 160)  # two bright blobs: scribble on one, the other must be found
    rgb[30:70, 80:120] = (200, 180, 160)
    viewer.add_image(rgb, rgb=True, name="photo")
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    support = widget.create_support_layer()
    assert support.data.shape == (96, 128)
    support.data[40:60, 30:50] = 1  # the object
    support.data[5:20, 5:120] = 2  # background scribble
    support.refresh()
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert any("Every slice is painted" in m for _, m in notes)  # dense mode cannot complete this image
    widget.ui.set_support_mode("scribble")
    widget.ui.settings["background_label"].value = 2
    widget.ui.heatmap_check.setChecked(True)
    widget.segment("all")
    wait_idle(qtbot, widget)
    prediction = widget.prediction_layer
    assert prediction.data.shape == (96, 128)
    assert (prediction.data[35:65, 85:115] == 1).mean() > 0.8  # the unpainted blob
    assert (prediction.data[80:, :] == 0).mean() > 0.8  # background is 0, not the background label
    assert widget.heatmap_layers[1].data.shape == (96, 128)
    assert widget.heatmap_layers[1].name == "class 1: cosine similarity"
