"""Make docs/correction_*.png: the correction loop in a real napari window (not a test; to look at).

Run headless from the repository root:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_correction_screenshots.py [OUT_DIR]

Steps, each followed by a screenshot of the whole window:

1. ``correction_before.png``: the CT sample, the liver painted on slices 79, 90 and 100, Segment all; the
   viewer is on the unpainted slice whose liver the prediction misses most (prediction layer only).
2. ``correction_after.png``: one brush stroke through the missed part, with real mouse events on the
   canvas. The slice started from the prediction, so the support now holds the predicted liver plus the
   stroke; the status line says so. The reference outline (yellow contour) shows where the liver is.
3. ``correction_resegmented.png``: Segment all again; the corrected slice is support and stays as corrected.

Printed: the slice, its liver Dice before/after the stroke, and the times.
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
from napari.utils.colormaps import DirectLabelColormap
from scipy import ndimage

from napari_fewshot.core import dice
from napari_fewshot.plugin import ROLE_KEY

# The GUI driver (real mouse drags, waiting for the widget's jobs) is a test helper in tests/, not package code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gui_driver import canvas_drag, wait_idle  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
LIVER, PAINTED = 1, (79, 90, 100)
BRUSH = 10  # the support layer's brush size


def shoot(viewer, name):
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # the "done" notifications would cover the canvas
    wait_idle()
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def missed_slice(prediction, reference):
    """(slice, stroke points): the unpainted slice with the longest run of liver the prediction missed, a
    brush width inside the reference liver (so the stroke only adds true liver)."""
    best = (0, None, None)
    for z in range(len(prediction)):
        if z in PAINTED or not (prediction[z] == LIVER).any():
            continue
        missed = ndimage.binary_erosion(reference[z] == LIVER, iterations=BRUSH // 2 + 3) & (prediction[z] != LIVER)
        for row in np.nonzero(missed.any(1))[0]:
            cols = np.nonzero(missed[row])[0]
            run = max(np.split(cols, np.nonzero(np.diff(cols) != 1)[0] + 1), key=len)[:40]
            if len(run) > best[0]:
                points = [(int(row), int(c)) for c in run[:: max(len(run) // 4, 1)]]
                best = (len(run), z, points + [(int(row), int(run[-1]))])
    return best[1], best[2]


def main() -> None:
    os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="fewshot-screenshot-")
    viewer = napari.Viewer(title="napari-fewshot: correcting a slice", show=True)
    viewer.window._qt_window.resize(1300, 860)
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)
    yellow = DirectLabelColormap(color_dict={1: "yellow", None: "transparent"})
    outline = viewer.add_labels((reference == LIVER).astype(np.uint8), name="reference liver (outline)",
                                scale=viewer.layers["CT abdomen"].scale, opacity=1.0, colormap=yellow,
                                metadata={ROLE_KEY: "reference"})  # never offered as the support
    outline.contour = 1
    support = widget.create_support_layer()
    viewer.layers.move(viewer.layers.index(outline), len(viewer.layers))  # the outline on top
    data = support.data
    for z in PAINTED:
        data[z][reference[z] == LIVER] = LIVER
    support.data = data

    widget.segment("all")
    print(f"segment all: {wait_idle(widget):.1f} s")
    prediction = widget.prediction_layer.data.copy()
    z, points = missed_slice(prediction, reference)
    viewer.dims.set_current_step(0, z)
    viewer.layers.selection.active = support
    viewer.reset_view()
    rows, cols = np.nonzero(reference[z] == LIVER)  # zoom onto the liver
    centre = viewer.layers["CT abdomen"].data_to_world([z, rows.mean(), cols.mean()])
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(centre[1:])
    camera.zoom *= 1.6
    shoot(viewer, "correction_before.png")

    before = dice(prediction[z] == LIVER, reference[z] == LIVER)
    canvas_drag(viewer, support, z, points, LIVER, brush=BRUSH)
    after = dice(support.data[z] == LIVER, reference[z] == LIVER)
    print(f"slice {z}: liver Dice {before:.3f} -> {after:.3f}; status: {widget.ui.status_label.text()}")
    support.mode = "pan_zoom"  # no brush cursor in the picture
    shoot(viewer, "correction_after.png")

    widget.segment("all")
    print(f"segment all again: {wait_idle(widget):.1f} s")
    assert np.array_equal(widget.prediction_layer.data[z], support.data[z])
    shoot(viewer, "correction_resegmented.png")
    viewer.close()


if __name__ == "__main__":
    main()
