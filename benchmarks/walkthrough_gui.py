"""A clinician's walk through the window, driven like a user: a real napari viewer (under Xvfb), the plugin's dock
widget, its buttons clicked through Qt, paint written into the support layer through the layer's own API (with
undo history, as the fill tool writes it) or dragged on the canvas (tests/gui_driver.py), rectangles dragged with
the Box tool, dialogs answered with a path. A screenshot after every step (``viewer.screenshot(..., canvas_only=False)``)
and a log line: the status line, the notifications shown since the last step, and anything that went to the
excepthook (a traceback is a defect).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/walkthrough_gui.py ct|dicom|us|bad [--out /tmp/walk]

Stories: ``ct`` (CT sample: paint liver + spleen, Segment, refinement streaming, heatmaps, Check next, a
correction, Fine-tune, export NIfTI, close and reopen for Restore painting), ``dicom`` (a DICOM series: export
DICOM SEG and read it back), ``us`` (10 BUSI images as a set: 3 boxes, Segment, heatmaps, Check next, a box
correction, Ctrl+Z, Fine-tune, export masks), ``bad`` (mistakes: Segment with nothing painted, every slice
painted, a non-image file, a folder that cannot be written, a second Segment, closing while refinement streams).
The stories live in walkthrough_volumes.py (ct, dicom) and walkthrough_images.py (us, bad); ``dicom`` and ``us`` read
../shared/data. The log is written to OUT/log_STORY.json. Autosaves go to OUT/autosave (never the user's cache).
Findings of session 15: BENCHMARKS.md, "A clinician's walk through the window on a fresh machine".
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the GUI driver (mouse drags, waiting for jobs) is a test helper
DATA = ROOT.parent / "shared" / "data"
CT_SLICES = (92, 104)  # liver spans 69-111 of the CT sample, spleen 82-111: both on each painted slice
LIVER, SPLEEN = 1, 2


class Walk:
    """Screenshots and a log line per step; notifications and uncaught exceptions are collected in between."""

    def __init__(self, out: Path, story: str):
        from napari.utils.notifications import notification_manager

        self.out, self.story, self.steps, self.notes, self.errors = out, story, [], [], []
        self.viewer = self.widget = None
        self.n = 0
        self.t0 = time.perf_counter()
        notification_manager.notification_ready.connect(
            lambda n: self.notes.append(f"{str(n.severity).split('.')[-1].lower()}: {n.message}"))
        previous = sys.excepthook

        def hook(kind, value, tb):
            self.errors.append("".join(traceback.format_exception(kind, value, tb)))
            previous(kind, value, tb)
        sys.excepthook = hook

    def pump(self, seconds: float = 0.3) -> None:
        from qtpy.QtWidgets import QApplication

        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            QApplication.instance().processEvents()
            time.sleep(0.01)

    def wait(self, until=None, timeout_s: float = 900.0) -> float:
        """Run Qt's loop until `until()` (default: the widget idle, its box tool too); seconds waited."""
        from qtpy.QtWidgets import QApplication

        until = until or (lambda: not self.widget.busy and not self.widget.boxes.busy)
        started = time.perf_counter()
        while not until() and time.perf_counter() - started < timeout_s:
            QApplication.instance().processEvents()
            time.sleep(0.01)
        waited = time.perf_counter() - started
        self.pump(0.6)
        return waited

    def step(self, name: str, expected: str, **facts) -> dict:
        self.n += 1
        self.pump(0.4)
        shot = self.out / f"{self.story}_{self.n:02d}_{name}.png"
        try:
            self.viewer.screenshot(str(shot), canvas_only=False)
        except Exception as exc:  # noqa: BLE001 - a step after the viewer closed
            shot = f"(no screenshot: {exc})"
        ui = self.widget.ui if self.widget is not None else None
        try:
            status = ui.status_label.text() if ui is not None else ""
        except RuntimeError:
            status = "(widget deleted)"
        entry = {"step": self.n, "name": name, "t_s": round(time.perf_counter() - self.t0, 1), "expected": expected,
                 "status": status, "notifications": self.notes[:], "errors": self.errors[:],
                 "screenshot": str(shot), **facts}
        self.notes.clear()
        self.errors.clear()
        self.steps.append(entry)
        print(json.dumps(entry, default=str), flush=True)
        (self.out / f"log_{self.story}.json").write_text(json.dumps(self.steps, indent=1, default=str))
        return entry

    def open_viewer(self):
        import napari

        self.viewer = napari.Viewer(show=True)
        self.viewer.window._qt_window.resize(1600, 1000)
        self.pump(0.5)
        return self.viewer

    def dock(self):
        """Plugins > Few-shot segmentation."""
        _, self.widget = self.viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
        self.pump(0.5)
        self.viewer.reset_view()  # docking narrows the canvas and napari keeps its zoom: the user presses Home
        return self.widget

    def close(self):
        self.viewer.close()
        self.pump(0.5)


def answer_dialogs(path):
    """The next save / folder dialog answers ``path`` (as a user typing it and pressing Save)."""
    from qtpy.QtWidgets import QFileDialog

    QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(path), ""))
    QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(path))


def paint_from(support, reference, z, label, source_label=None):
    """Fill ``label`` where ``reference == source_label`` on slice z: one edit with undo history, as the fill tool."""
    support.selected_label = label
    rows, cols = np.nonzero(reference[z] == (source_label or label))
    support.data_setitem((np.full_like(rows, z), rows, cols), label)


def press_key(viewer, key):
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def missed_stroke(prediction, truth, margin=5):
    """A horizontal run of reference pixels the prediction missed, `margin` px inside (a stroke adding organ)."""
    from scipy import ndimage

    inside = ndimage.binary_erosion(truth, iterations=margin)
    candidates = inside & ~prediction
    best = None
    for row in np.nonzero(candidates.any(1))[0]:
        cols = np.nonzero(candidates[row])[0]
        run = max(np.split(cols, np.nonzero(np.diff(cols) != 1)[0] + 1), key=len)[:30]
        if best is None or len(run) > len(best[1]):
            best = (int(row), run)
    if best is None or len(best[1]) < 4:
        return None
    row, run = best
    return [(row, int(run[0])), (row, int(run[len(run) // 2])), (row, int(run[-1]))]


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("story", choices=["ct", "dicom", "us", "bad"])
    parser.add_argument("--out", default="/tmp/walk")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_FEWSHOT_AUTOSAVE_DIR", str(out / "autosave"))
    walk = Walk(out, args.story)
    try:
        import walkthrough_images
        import walkthrough_volumes

        stories = {"ct": walkthrough_volumes.story_ct, "dicom": walkthrough_volumes.story_dicom,
                   "us": walkthrough_images.story_us, "bad": walkthrough_images.story_bad}
        stories[args.story](walk)
    except Exception:  # noqa: BLE001 - the walk itself broke: log where
        walk.errors.append(traceback.format_exc())
        walk.step("walk_broke", "(the script failed here)")
        raise


if __name__ == "__main__":
    main()
