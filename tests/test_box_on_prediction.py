"""A box dragged on a predicted image of an image set signs it, in a real napari window: the image's
prediction is replaced by the box's mask, the image counts as support, and one Ctrl+Z gives back both the
prediction and the unpainted (unsigned) image; Shift+Ctrl+Z signs it again. Run on three BUSI images
(../shared/data) and on four slices of the CT sample saved as PNG files (runs on a fresh clone)."""

import re
import shutil

import numpy as np
import pytest
from conftest import CT_REFERENCE_NAME, LIVER
from gui_driver import rectangle_drag, wait_idle
from PIL import Image
from shared_data import BUSI, require

from napari_fewshot.core import dice
from napari_fewshot.core.sam_prompt import box_of
from napari_fewshot.io import read_busi_mask
from napari_fewshot.plugin import IMAGE_SET_KEY

pytestmark = pytest.mark.gui

WAIT_S = 600  # LiteMedSAM loads on the first box; the project machine is shared by several test runs
BUSI_IMAGES = ("benign (2).png", "benign (3).png", "malignant (1).png")
CT_SLICES = (75, 85, 95, 105)  # through the liver (slices 69-111 of the CT sample)
HU_WINDOW = (-160.0, 240.0)  # abdominal window, for the PNG files


def press_key(viewer, key):
    """A key press as the canvas handles it (the active layer's keymap first, then the viewer's)."""
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def _busi_folder(tmp_path, make_napari_viewer):
    busi = require(BUSI)
    folder = tmp_path / "ultrasound"
    folder.mkdir()
    for name in BUSI_IMAGES:
        for path in (busi / name.split(" ")[0]).glob(name.replace(".png", "*.png")):
            shutil.copy(path, folder / path.name)
    references = {name: read_busi_mask(folder / name) for name in BUSI_IMAGES}
    return make_napari_viewer(), folder, references


def _ct_folder(tmp_path, make_napari_viewer):
    """Four CT slices through the liver as 8-bit PNG files (windowed), with their liver masks."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    volume = np.asarray(viewer.layers[0].data, np.float32)
    reference = np.asarray(viewer.layers[CT_REFERENCE_NAME].data)
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    folder = tmp_path / "ct_slices"
    folder.mkdir()
    low, high = HU_WINDOW
    for z in CT_SLICES:
        plane = np.clip((volume[z] - low) / (high - low), 0, 1) * 255
        Image.fromarray(plane.round().astype(np.uint8)).save(folder / f"slice_{z:03d}.png")
    return viewer, folder, {f"slice_{z:03d}.png": reference[z] == LIVER for z in CT_SLICES}


def signed_count(widget) -> int | None:
    """Painted + corrected images of the first class on the line under the status (results.describe_volumes)."""
    found = re.search(r"\((\d+) painted, (\d+) corrected", widget.ui.volumes_label.text())
    return None if found is None else int(found[1]) + int(found[2])


@pytest.mark.parametrize("data", ["ct_png", "busi"])
def test_a_box_on_a_predicted_image_replaces_its_prediction_and_one_ctrl_z_restores_it(
        data, make_napari_viewer, tmp_path, qtbot):
    viewer, folder, by_name = (_ct_folder if data == "ct_png" else _busi_folder)(tmp_path, make_napari_viewer)
    viewer.open(str(folder), plugin="napari-fewshot")
    image = viewer.layers[folder.name]
    info = image.metadata[IMAGE_SET_KEY]
    assert sorted(info.names) == sorted(by_name)
    references = [by_name[name] for name in info.names]
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    widget.ui.settings["refine.enabled"].value = False  # the prototypes' own prediction: quicker, often wrong
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data_ = support.data
    height, width = info.shapes[0]
    data_[0, :height, :width][references[0]] = 1  # the first image painted as support
    support.data = data_
    widget.segment("all")
    wait_idle(widget, WAIT_S)
    prediction = widget.prediction_layer
    crop = [(slice(None, h), slice(None, w)) for h, w in info.shapes]
    scores = [dice(prediction.data[i][crop[i]] == 1, references[i]) for i in range(len(references))]
    target = 1 + int(np.argmin(scores[1:]))  # the worst predicted image: the one a clinician would box
    predicted = np.array(prediction.data[target], copy=True)
    assert predicted.any() and not support.data[target].any()
    uncertainty = widget.session.last_result.uncertainty  # image sets: estimated 1 - Dice (core/uncertainty.py)
    assert sorted(uncertainty) == list(range(1, len(references))) and all(0 <= v <= 1 for v in uncertainty.values())
    proposed = widget.corrections.check_next()
    assert proposed == max(uncertainty, key=lambda i: (uncertainty[i], -i))
    assert "estimated Dice error" in widget.ui.status_label.text() and "Box → paint" in widget.ui.status_label.text()

    qtbot.waitUntil(lambda: signed_count(widget) == 1, timeout=10_000)  # the line under the status: 1 painted
    support.selected_label = 1
    boxes = widget.boxes.start()
    x0, y0, x1, y1 = box_of(references[target], 0.1)
    rectangle_drag(viewer, boxes, target, (y0, x0), (y1, x1))
    qtbot.waitUntil(lambda: not widget.boxes.busy, timeout=WAIT_S * 1000)
    qtbot.wait(50)
    status = widget.ui.status_label.text()
    assert "is signed and its prediction shows the box's mask" in status, status
    signed = np.array(support.data[target], copy=True)
    assert dice(signed[crop[target]] == 1, references[target]) >= 0.8  # the box's mask is the lesion / liver
    np.testing.assert_array_equal(prediction.data[target], signed)  # the prediction shows what was signed
    assert dice(signed[crop[target]] == 1, references[target]) > scores[target]
    others = [i for i in range(len(references)) if i != target]
    assert not support.data[[i for i in others if i != 0]].any()  # only the boxed image was signed
    qtbot.waitUntil(lambda: signed_count(widget) == 2, timeout=10_000)  # the counts follow the box

    press_key(viewer, "Control-Z")  # the boxes layer is active: one Ctrl+Z takes back paint and prediction
    assert not support.data[target].any()
    np.testing.assert_array_equal(prediction.data[target], predicted)
    assert "no longer signed and shows its prediction again" in widget.ui.status_label.text()
    qtbot.waitUntil(lambda: signed_count(widget) == 1, timeout=10_000)  # ... and its undo
    press_key(viewer, "Control-Shift-Z")
    np.testing.assert_array_equal(support.data[target], signed)
    np.testing.assert_array_equal(prediction.data[target], signed)

    viewer.layers.selection.active = support  # Ctrl+Z on the support layer itself does the same
    press_key(viewer, "Control-Z")
    assert not support.data[target].any()
    np.testing.assert_array_equal(prediction.data[target], predicted)
