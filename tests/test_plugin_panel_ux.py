"""The panel as a clinician meets it (issue 13): what is painted vs predicted, readable heatmaps, the
layer a sample selects, the hint, the scribble background label, dialogs and wording. Real viewer,
buttons clicked, state asserted."""

import numpy as np
import pytest
import torch
from conftest import CT_IMAGE_NAME, CT_REFERENCE_NAME, LIVER, paint_support, wait_idle
from qtpy.QtCore import Qt

from napari_fewshot.plugin.layers import same_layer

pytestmark = pytest.mark.gui

RANGE = (88, 92)  # a few slices segmented: quick, and the rest of the heatmap stays 0 (not segmented)


def _shown(layer, values):
    """Brightness (0..1) napari gives `values` of an Image layer (contrast limits, gamma)."""
    low, high = layer.contrast_limits
    return np.clip((values - low) / (high - low), 0, 1) ** layer.gamma


def test_prediction_outlined_support_filled_heatmap_readable(ct, qtbot):
    viewer, widget, reference = ct
    support = paint_support(widget, reference, slices=(84, 96))
    widget.ui.heatmap_check.setChecked(True)
    widget.ui.set_scope("range")
    widget.ui.range_start.setValue(RANGE[0])
    widget.ui.range_stop.setValue(RANGE[1])
    qtbot.mouseClick(widget.ui.segment_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, widget)

    prediction = widget.prediction_layer
    assert (prediction.data[90] == LIVER).any()
    # item 6: painted = filled, predicted = outlined, one colour per class in both
    assert support.contour == 0 and prediction.contour >= 1 and prediction.opacity == 1.0
    np.testing.assert_allclose(prediction.colormap.map(np.arange(5)), support.colormap.map(np.arange(5)))

    # item 5: the class name in the layer name, a colour bar, the class colour, the class stands out
    heat = widget.heatmap_layers[LIVER]
    assert heat.name == "liver (1): cosine similarity"
    assert heat.colorbar.visible and "liver" in heat.colormap.name
    np.testing.assert_allclose(heat.colormap.colors[-1], support.colormap.map(np.array([LIVER]))[0])
    segmented = heat.data[RANGE[0]:RANGE[1] + 1]
    truth = reference[RANGE[0]:RANGE[1] + 1] == LIVER
    other_tissue = ~truth & (segmented > 0.5)  # soft tissue that resembles liver somewhat
    liver, tissue = _shown(heat, segmented[truth]).mean(), _shown(heat, segmented[other_tissue]).mean()
    print(f"shown brightness: liver {liver:.3f}, other tissue {tissue:.3f}, limits {heat.contrast_limits}")
    assert liver > 0.3 and liver > 5 * tissue


def test_float_label_map_opens_as_labels_over_the_scan(make_napari_viewer):
    """CHAOS stores its reference labels as float64: they open as an integer Labels layer (item 7)."""
    from shared_data import CHAOS, require

    viewer = make_napari_viewer()
    scan = viewer.open(str(require(CHAOS) / "image_1.nii.gz"), plugin="napari-fewshot")[0]
    labels = viewer.open(str(CHAOS / "label_1.nii.gz"), plugin="napari-fewshot")[0]
    assert labels.__class__.__name__ == "Labels" and labels.data.dtype == np.uint8
    assert labels.data.shape == scan.data.shape and set(np.unique(labels.data)) <= {0, 1, 2, 3, 4}
    assert (labels.data > 0).any() and tuple(labels.scale) == tuple(scan.scale)
    assert scan.__class__.__name__ == "Image"  # the scan itself stays an image (its name says nothing)


def test_open_sample_selects_the_scan_and_says_press_new(make_napari_viewer, qtbot):
    """Item 11: the hidden reference is not left active, and the hint follows the state."""
    from napari_fewshot.plugin import guidance, image_sets

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    assert widget.ui.status_label.text() == guidance.HINT_NO_IMAGE
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    qtbot.waitUntil(lambda: viewer.layers.selection.active is viewer.layers[CT_IMAGE_NAME], timeout=5000)
    qtbot.waitUntil(lambda: widget.ui.status_label.text() == guidance.HINT_NO_SUPPORT.format(units="slices"),
                    timeout=5000)
    qtbot.mouseClick(widget.ui.new_support_button, Qt.MouseButton.LeftButton)
    assert same_layer(viewer.layers.selection.active, widget.support_layer)
    qtbot.waitUntil(lambda: widget.ui.status_label.text() == guidance.HINT_PAINT.format(units="slices"),
                    timeout=5000)


def test_widget_opened_after_the_sample_selects_the_scan(ct):
    viewer, widget, _ = ct
    assert viewer.layers.selection.active is viewer.layers[CT_IMAGE_NAME]
    assert not viewer.layers[CT_REFERENCE_NAME].visible


def test_scribble_background_label_never_defaults_to_the_first_class(ct, qtbot, notes):
    """Item 3: painting the liver with napari's default label 1 and switching to scribbles must work."""
    viewer, widget, reference = ct
    support = paint_support(widget, reference, slices=(90,))  # liver painted with label 1
    widget.ui.set_support_mode("scribble")
    # one above every class the sample names (liver, spleen, kidneys: 1-4)
    background = widget.ui.settings["background_label"]
    qtbot.waitUntil(lambda: background.value == 5, timeout=5000)
    assert not background.native.isHidden() and background.label == "Background label"
    assert "label 5" in widget.ui.status_label.text()
    data = support.data
    data[90, 5:20, 5:40] = 5  # a background scribble
    support.data = data
    viewer.dims.set_current_step(0, 90)
    widget.ui.set_scope("current")
    qtbot.mouseClick(widget.ui.segment_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, widget)
    assert not [m for s, m in notes if s == "error"]
    assert (widget.prediction_layer.data[90] == LIVER).any()
    background.value = 7  # the user's choice is kept
    widget.guidance.refresh()
    assert background.value == 7


def test_image_set_wording_class_name_and_device_error(make_napari_viewer, qtbot, tmp_path, notes, png_set):
    """Item 10 (an image set counts images; the device error names the panel's control) and item 5 (the
    ultrasound heatmap keeps the class name)."""
    import shutil

    from napari_fewshot.plugin import guidance, image_sets

    folder = tmp_path / "ultrasound"  # three 2D MR slices made from the shipped CHAOS case (conftest.png_set)
    folder.mkdir()
    for path in sorted((png_set / "mr").glob("mr ([123])*.png")):
        shutil.copy(path, folder / path.name)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    viewer.open(str(folder), plugin="napari-fewshot")
    image = viewer.layers["ultrasound"]
    qtbot.waitUntil(lambda: viewer.layers.selection.active is image, timeout=5000)
    qtbot.waitUntil(lambda: widget.ui.scope_combo.itemText(0) == "all images", timeout=5000)
    assert widget.ui.range_label.text() == "images" and widget.ui.scope_combo.itemText(2) == "image range"
    assert widget.ui.status_label.text() == guidance.HINT_NO_SUPPORT.format(units="images")
    overlay = image_sets.text_overlay(viewer)  # the file name, at the top, away from napari's toasts (bottom right)
    assert overlay.visible and overlay.text.startswith("image: mr (") and " of 3, " in overlay.text
    assert "top" in str(overlay.position)
    widget.ui.set_scope("current")
    assert widget.ui.scope() == "current" and widget.ui.scope_combo.currentText() == "current image"

    support = widget.create_support_layer()
    reference = np.asarray(viewer.layers["ultrasound: reference masks"].data)
    data = support.data
    data[0] = reference[0]
    support.data = data
    widget.ui.heatmap_check.setChecked(True)
    viewer.dims.set_current_step(0, 1)
    qtbot.mouseClick(widget.ui.segment_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, widget)
    heat = widget.heatmap_layers[1]
    assert heat.name == "lesion (1): cosine similarity"
    lesion = reference[1] == 1
    inside, outside = _shown(heat, heat.data[1][lesion]).mean(), _shown(heat, heat.data[1][~lesion]).mean()
    print(f"ultrasound shown brightness: lesion {inside:.3f}, elsewhere {outside:.3f}, limits {heat.contrast_limits}")
    assert inside > 3 * outside  # the lesion is highlighted
    assert any(m.startswith("Segmented 1 image from 1 support image in ") for _, m in notes)

    notes.clear()
    if torch.cuda.is_available():
        return
    widget.ui.settings["device"].value = "cuda"
    errors = [m for s, m in notes if s == "error"]
    assert errors and "Device list" in errors[0] and "--device" not in errors[0]
    assert widget.ui.settings["device"].value == "auto"
    widget.ui.set_scope("all")
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: widget.ui.scope_combo.itemText(0) == "all slices", timeout=5000)


def test_the_image_name_and_the_heatmap_titles_sit_in_opposite_corners(make_napari_viewer, tmp_path, png_set):
    """Session 15's walkthrough (docs/walkthrough/us_heatmap_title.png): with heatmaps on over an image set, the file
    name, centred at the top, ran under the first heatmap title (top right) on a canvas narrowed by the dock widgets
    ("549 x 496 px" over "lesion (1)"). The name now sits at the top left, the titles and colour bars at the right."""
    import shutil

    from napari_fewshot.plugin import image_sets, results

    folder = tmp_path / "ultrasound"
    folder.mkdir()
    for path in sorted((png_set / "mr").glob("mr ([12])*.png")):
        shutil.copy(path, folder / path.name)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    viewer.open(str(folder), plugin="napari-fewshot")
    widget.set_image_layer(viewer.layers["ultrasound"])
    image_sets.show_image_name(viewer, widget.image_layer)
    heat = viewer.add_image(np.zeros((2, 8, 8), np.float32), name="lesion (1): cosine similarity", colormap="red")
    heat.colorbar.visible = True
    results.show_legend(heat, viewer)  # the title over its colour bar, as a segmentation with heatmaps shows it
    overlay = image_sets.text_overlay(viewer)
    assert overlay.visible and overlay.text.startswith("image: mr (")
    name_row, name_side = str(overlay.position).split("_")
    title_row, title_side = str(heat.name_overlay.position).split("_")
    assert name_row == title_row == "top"  # both at the top of the canvas (notifications come up at the bottom)...
    assert {name_side, title_side} == {"left", "right"}  # ...at opposite sides, never one over the other


def test_the_status_line_and_volumes_stay_in_view_on_a_short_screen(make_napari_viewer, qtbot):
    """Session 15's walkthrough (docs/walkthrough/us_status_hidden.png): in a 1600 x 1000 window the status line was
    the last thing in the panel's scrolling controls, half cut off, and out of view once the model line grew to four
    lines after a Fine-tune; the volumes under it were never seen. They now sit under the scrolling controls."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 720)
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    ui = widget.ui
    ui.model_label.setText("Using efficientnet-lite0 on cpu; features cached for 10 images (fine-tuned: the LiteMedSAM "
                           "mask decoder (32 weights, trained 300 steps on 4 signed objects) on 4 signed images).")
    ui.status_label.setText("Image benign (5).png: the least sure of 7 left (estimated Dice error 0.42: it may have "
                            "missed the object); correct it with a box (Box → paint) or a stroke.")
    ui.volumes_label.setText("lesion: 119471 px, images 0-9 (3 painted, 0 corrected, 7 predicted)")
    for _ in range(20):
        QApplication.processEvents()
    for label in (ui.status_label, ui.volumes_label, ui.cancel_button):
        seen = label.visibleRegion().boundingRect()
        assert label.isVisible() and seen.height() == label.height() > 0, label.text()
