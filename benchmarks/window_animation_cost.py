"""What an animation in the window costs the CPU (session 21, issue 21): a real viewer (Xvfb) with a 512 x 512 x 100
image and the plugin's dock, left alone for 3 s in each state; the CPU milliseconds of software OpenGL's threads
(llvmpipe-N: Qt composes the whole window in OpenGL for every frame once the canvas is in it) and of the Qt thread.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/window_animation_cost.py

States: idle; the widget's progress bar busy (range 0..0, Qt animates it) and still (a value); napari's activity
indicator (its loading GIF, 33 frames a second, shown while any napari progress is open) at 100 %, at
activity.SPEED_PERCENT and at 20 %, paused; a still bar whose value changes every 200 / 50 ms.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch  # noqa: F401  (before Qt)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # heartbeat.py


def main() -> None:
    import napari
    import numpy as np
    from napari.utils import progress
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from heartbeat import thread_times, thread_use
    from napari_fewshot.plugin.activity import SPEED_PERCENT, activity_movies

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((100, 512, 512), dtype=np.float32), name="scan")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    app = QApplication.instance()

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    def state(label: str) -> None:
        spin(0.5)
        before, started = thread_times(), time.perf_counter()
        spin(3.0)
        rows = thread_use(before, thread_times(), time.perf_counter() - started)
        drawing = sum(r["cpu_ms"] for r in rows if r["thread"].startswith("llvmpipe"))
        qt = sum(r["cpu_ms"] for r in rows if r["thread"] == "main")
        print(f"{label:48s} software OpenGL {drawing:7.1f} CPU-ms, Qt thread {qt:6.1f} CPU-ms per 3 s", flush=True)

    spin(3)
    bar = widget.ui.progress_bar
    state("idle")
    bar.setRange(0, 0)
    state("widget bar busy (range 0..0)")
    bar.setRange(0, 10)
    bar.setValue(3)
    state("widget bar still (3 of 10)")
    job = progress(total=10, desc="Segmenting")
    job.update(3)
    gifs = activity_movies()
    for speed in (100, 20, SPEED_PERCENT):
        for gif in gifs:
            gif.setSpeed(speed)
        state(f"napari activity indicator at {speed} %")
    for gif in gifs:
        gif.setPaused(True)
    state("napari activity indicator paused")
    bar.setRange(0, 100)
    step = [0]

    def tick():
        step[0] += 1
        bar.setValue(step[0] % 100)

    timer = QTimer()
    timer.timeout.connect(tick)
    for every in (200, 50):
        timer.setInterval(every)
        timer.start()
        state(f"widget bar value every {every} ms")
    timer.stop()
    job.close()
    viewer.close()


if __name__ == "__main__":
    main()
