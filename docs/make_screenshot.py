"""Make docs/screenshot.png: napari with the CT sample, a painted support, the prediction and a heatmap,
and docs/painted_vs_predicted.png: an axial slice the user painted beside one the model predicted.

Run headless from the repository root:

    xvfb-run -a .venv/bin/python docs/make_screenshot.py [OUTPUT.png [PAIR.png]]

It drives the dock widget exactly as a user would (through its public methods): open the sample,
create the support layer, paint liver, spleen and both kidneys on three axial slices (copied from
the sample's reference labels), compute features, segment all slices with heatmaps on. The view is
a coronal reslice: the three painted slices show as lines, the prediction fills the organs between
them (outlined: paint is filled, predictions are drawn as outlines), and the liver heatmap glows
in the liver's colour with its colour bar (the other heatmaps are hidden). The pair shows painted
slice 93 (filled) beside predicted slice 88 (outlines), every heatmap on.
"""

import torch  # noqa: F401  (before Qt, see ../shared/DESIGN.md)

# isort: split
import os
import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from napari._qt.dialogs.qt_notification import NapariQtNotification
from PIL import Image, ImageDraw, ImageFont


# The GUI driver (real mouse drags, waiting for the widget's jobs) is a test helper in tests/, not package code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gui_driver import wait_idle  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "screenshot.png"
PAIR = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "painted_vs_predicted.png"
PREDICTED_SLICE = 88  # an unpainted slice between the painted ones, all four organs on it
PAINTED_SLICES = (84, 93, 100)  # axial slices painted with all four organs
CORONAL_ROW = 60  # the coronal plane shown (row index of the axial slices); all four organs cross it


def main() -> None:
    # The scripted painting is not the user's: keep its autosaves out of their cache folder.
    os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="fewshot-screenshot-")
    viewer = napari.Viewer(title="napari-fewshot", show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)

    support = widget.create_support_layer()
    data = support.data
    for z in PAINTED_SLICES:
        data[z] = reference[z]
    support.data = data

    viewer.dims.set_current_step(0, PAINTED_SLICES[1])
    widget.compute_features()
    print(f"compute features: {wait_idle(widget):.1f} s")
    widget.ui.heatmap_check.setChecked(True)
    widget.segment("all")
    print(f"segment all slices: {wait_idle(widget):.1f} s")
    heatmaps = widget.heatmap_layers
    for class_id, layer in heatmaps.items():
        layer.visible = class_id == 1
    print("layers:", [layer.name for layer in viewer.layers])

    viewer.dims.order = (1, 0, 2)  # show slices x columns: a coronal reslice
    viewer.dims.set_current_step(1, CORONAL_ROW)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.orientation = ("away", "up", "right")  # slice 0 (inferior) at the bottom
    viewer.layers.selection.active = support
    viewer.reset_view()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # the "done" notifications would cover the canvas
    wait_idle(settle_s=1.0)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    _painted_vs_predicted(viewer, heatmaps)
    viewer.close()


def _painted_vs_predicted(viewer, heatmaps) -> None:
    """Axial views of a painted and a predicted slice side by side, captioned, every heatmap on."""
    for layer in heatmaps.values():
        layer.visible = True
    viewer.dims.order = (0, 1, 2)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.orientation = ("towards", "down", "right")
    viewer.reset_view()
    shots = []
    for z, caption in ((PAINTED_SLICES[1], "painted slice {z}: support, filled"),
                       (PREDICTED_SLICE, "slice {z}: prediction, outlined")):
        viewer.dims.set_current_step(0, z)
        wait_idle(settle_s=1.0)
        shots.append((Image.fromarray(viewer.screenshot(canvas_only=True, flash=False)), caption.format(z=z)))
    width, height = sum(im.width for im, _ in shots), max(im.height for im, _ in shots)
    pair = Image.new("RGB", (width, height + 40), "black")
    draw, x = ImageDraw.Draw(pair), 0
    font = ImageFont.load_default(size=24)
    for image, caption in shots:
        pair.paste(image.convert("RGB"), (x, 40))
        draw.text((x + 12, 6), caption, fill="white", font=font)
        x += image.width
    pair.save(PAIR)
    print(f"wrote {PAIR}")


if __name__ == "__main__":
    main()
