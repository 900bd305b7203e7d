"""Make docs/box_before.png and docs/box_after.png: Box -> paint in a real napari window (not a test; to look at).

Run headless from the repository root:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_box_screenshots.py [OUT_DIR]

Three BUSI images (../shared/data/busi) open as one image set with the widget docked and an empty support.
The Box -> paint button adds the ``boxes`` layer; one rectangle is dragged (real mouse events on the canvas)
around the lesion of ``benign (3).png``, from its reference mask's box grown by 10 %.

1. ``box_before.png``: the rectangle just drawn; LiteMedSAM is working (the status line says so).
2. ``box_after.png``: the lesion painted into the support with label 1, the rectangle gone; the reference
   lesion is shown as a yellow outline.

Printed: the Dice of the painted lesion against the reference and the seconds it took.
"""

import torch  # noqa: F401  (before Qt, see ../shared/DESIGN.md)

# isort: split
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from napari._qt.dialogs.qt_notification import NapariQtNotification
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import QApplication

from napari_fewshot.core import dice
from napari_fewshot.core.sam_prompt import box_of
from napari_fewshot.io import read_busi_mask
from napari_fewshot.plugin import ROLE_KEY

# The GUI driver (real mouse drags, waiting for the widget's jobs) is a test helper in tests/, not package code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gui_driver import rectangle_drag, wait_idle  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
IMAGES = ("benign (2).png", "benign (3).png", "malignant (1).png")
SHOWN = "benign (3).png"


def shoot(viewer, name):
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def check_arguments() -> None:
    """One sentence and a non-zero exit for what would otherwise end in a Qt abort halfway through."""
    if len(sys.argv) > 2 or OUT.suffix.lower() == ".png" or (OUT.exists() and not OUT.is_dir()):
        sys.exit(f"usage: {Path(sys.argv[0]).name} [OUT_DIR]: give one folder for box_before.png and "
                 f"box_after.png, not {' '.join(sys.argv[1:])!r}.")
    if not all(any((BUSI / name.split(" ")[0]).glob(name.replace(".png", "*.png"))) for name in IMAGES):
        sys.exit(f"{BUSI} does not hold {', '.join(IMAGES)}: this script needs ../shared/data/busi beside the "
                 "repository.")
    OUT.mkdir(parents=True, exist_ok=True)


def main() -> None:
    check_arguments()
    os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="fewshot-screenshot-")
    folder = Path(tempfile.mkdtemp(prefix="fewshot-box-")) / "ultrasound"
    folder.mkdir()
    for name in IMAGES:
        for path in (BUSI / name.split(" ")[0]).glob(name.replace(".png", "*.png")):
            shutil.copy(path, folder / path.name)
    viewer = napari.Viewer(title="napari-fewshot: Box -> paint", show=True)
    viewer.window._qt_window.resize(1300, 860)
    viewer.open(str(folder), plugin="napari-fewshot")
    image = viewer.layers["ultrasound"]
    info = image.metadata["napari_fewshot_image_set"]
    index = info.names.index(SHOWN)
    reference = read_busi_mask(folder / SHOWN)
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    padded = np.zeros(support.data.shape[1:], np.uint8)
    padded[: reference.shape[0], : reference.shape[1]] = reference
    yellow = DirectLabelColormap(color_dict={1: "yellow", None: "transparent"})
    outline = viewer.add_labels(np.repeat(padded[None], len(info), 0) * (np.arange(len(info)) == index)[:, None, None],
                                name="reference lesion (outline)", opacity=1.0, colormap=yellow,
                                metadata={ROLE_KEY: "reference"})
    outline.contour = 2
    support.selected_label = 1
    widget.ui.box_button.click()
    boxes = viewer.layers["boxes"]
    viewer.dims.set_current_step(0, index)
    viewer.reset_view()
    wait_idle()
    x0, y0, x1, y1 = box_of(reference, 0.1)
    started = time.perf_counter()
    rectangle_drag(viewer, boxes, index, (y0, x0), (y1, x1))
    outline.visible = False  # the "before" picture shows what the user sees: image and rectangle
    shoot(viewer, "box_before.png")
    while widget.boxes.busy:
        QApplication.instance().processEvents()
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    outline.visible = True
    wait_idle()
    painted = np.asarray(support.data[index, : reference.shape[0], : reference.shape[1]]) == 1
    print(f"{SHOWN}: lesion Dice {dice(painted, reference):.3f} in {seconds:.1f} s (LiteMedSAM loaded on this first "
          f"box); status: {widget.ui.status_label.text()}")
    shoot(viewer, "box_after.png")
    viewer.close()


if __name__ == "__main__":
    main()
