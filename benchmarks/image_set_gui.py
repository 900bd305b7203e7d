"""Issue 7's flow on the shared BUSI folders, through the real widget: open a folder as an image set,
paint the first 5 images from their masks, segment the rest, export NAME_mask.png, score the export.

    xvfb-run -a python benchmarks/image_set_gui.py [benign malignant] [--data ../shared/data/busi] [--show]

Prints per folder: images, mean / median Dice of the exported masks of the unpainted images against
the shared masks, and seconds to open, segment (encoder load included; with the process's CPU seconds and those
of software OpenGL's threads, which draw the window) and export. --show shows the window (drawn, as a user has it).
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# The GUI driver (real mouse drags, waiting for the widget's jobs) is a test helper in tests/, not package code.
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # heartbeat.py: threads' CPU seconds
PAINTED = 5


def run_folder(folder: Path, out: Path, show: bool = False) -> str:
    import napari

    from napari_fewshot.core import dice
    from napari_fewshot.io import read_busi_mask
    from napari_fewshot.plugin import IMAGE_SET_KEY

    from gui_driver import wait_idle
    from heartbeat import thread_times, thread_use

    viewer = napari.Viewer(show=show)
    started = time.perf_counter()
    viewer.open(str(folder), plugin="napari-fewshot")
    image = viewer.layers[folder.name]
    info = image.metadata[IMAGE_SET_KEY]
    t_open = time.perf_counter() - started
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    data = support.data
    for i in range(PAINTED):
        mask = read_busi_mask(folder / info.names[i])
        data[i, : mask.shape[0], : mask.shape[1]][mask] = 1
    support.data = data
    threads, started, cpu = thread_times(), time.perf_counter(), time.process_time()
    widget.segment("all")
    wait_idle(widget, settle_s=0)
    t_segment = time.perf_counter() - started
    use = thread_use(threads, thread_times(), t_segment)  # the window's drawing: software OpenGL's llvmpipe threads
    drawing = sum(row["cpu_ms"] for row in use if row["thread"].startswith("llvmpipe")) / 1000
    process = time.process_time() - cpu
    started = time.perf_counter()
    written = widget.export(str(out / folder.name))
    t_export = time.perf_counter() - started
    scores = [dice(np.asarray(Image.open(p)) != 0, read_busi_mask(folder / info.names[i]))
              for i, p in enumerate(written) if i >= PAINTED]
    viewer.close()
    return (f"{folder.name}: {len(info)} images, {PAINTED} painted, {len(scores)} segmented: mean Dice "
            f"{np.mean(scores):.3f} (median {np.median(scores):.3f}); open {t_open:.1f} s, segment "
            f"{t_segment:.1f} s ({process:.1f} CPU-s, of it {drawing:.1f} drawing the window), export {t_export:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*", default=["benign", "malignant"])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--show", action="store_true", help="show the window, as a user has it (it is drawn)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # The benchmark's painting is not the user's: keep its autosaves out of their cache folder.
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        for name in args.folders:
            print(run_folder(Path(args.data) / name, Path(tmp), args.show), flush=True)


if __name__ == "__main__":
    main()
