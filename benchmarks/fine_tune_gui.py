"""Fine-tune pressed in the window on the CT sample (refinement on, the default), with screenshots of what it says.

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/fine_tune_gui.py OUT_DIR

Liver and spleen painted from the reference on slices 72, 81, 90, 99, 108, Segment all (LiteMedSAM refines), then
Fine-tune with the panel's default. Prints the status line and the model line after each step and the seconds;
saves OUT_DIR/fine_tune_group.png (the Fine-tune area), status.png, model.png and window.png."""
from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(out: Path) -> None:
    import napari

    from gui_driver import wait_idle

    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)
    viewer.layers.selection.active = viewer.layers["CT abdomen"]
    support = widget.create_support_layer()
    data = support.data
    for z in (72, 81, 90, 99, 108):
        for label in (1, 2):
            data[z][reference[z] == label] = label
    support.data = data
    t = time.perf_counter()
    widget.segment("all")
    wait_idle(widget)
    print(f"Segment all {time.perf_counter() - t:.1f} s: {widget.ui.status_label.text()}", flush=True)
    t = time.perf_counter()
    widget.fine_tune()
    wait_idle(widget)
    print(f"Fine-tune + re-segment {time.perf_counter() - t:.1f} s: status {widget.ui.status_label.text()!r}; "
          f"model line {widget.ui.model_label.text()!r}; load {os.getloadavg()[0]:.1f}", flush=True)
    viewer.dims.set_point(0, 95)
    wait_idle(widget, settle_s=1.0)
    widget.ui.fine_tune_group.grab().save(str(out / "fine_tune_group.png"))
    widget.ui.status_label.parentWidget().grab().save(str(out / "status.png"))
    widget.ui.model_label.parentWidget().grab().save(str(out / "model.png"))
    viewer.screenshot(str(out / "window.png"), canvas_only=False)
    print("tooltip:", widget.ui.fine_tune_button.toolTip())
    viewer.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        main(Path(sys.argv[1]))
