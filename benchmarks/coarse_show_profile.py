"""Where the Qt thread's time goes when a correction's coarse result is shown (issue 21; session 17).

    xvfb-run -a python benchmarks/coarse_show_profile.py [--scan tiled|ct] [--corrections 3] [--out PREFIX]

A real viewer (Xvfb): Segment all (features, not profiled), then per correction the reference of one more organ
slice into the support, a real stroke, a click on Segment; cProfile runs on the Qt thread from the click until
0.4 s after the coarse result is shown (the refinement streams meanwhile), and prints the functions with the most
own and cumulative time. The Qt thread's CPU ms (time.thread_time) in that window are printed too.

--ticks instead: no profiler; a 10 ms QTimer heartbeat on the Qt thread notes (wall, Qt thread CPU) at each tick,
from the click until the refinement is in. Per correction: the gap between ticks in which the coarse result was
put into the layer (runner's return slot), its wall ms and the Qt thread's CPU ms in it (what load does not
blur), and the largest Qt CPU ms between two ticks over the whole correction. One JSON line per correction.
Run another checkout's code with PYTHONPATH=THAT_TREE (this script only drives the window).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def ticked(app, widget) -> dict:
    """Click Segment with a 10 ms heartbeat noting (wall, Qt thread CPU) per tick until the refinement is in;
    the gap holding the coarse result's arrival (runner._on_return) and the largest Qt CPU between two ticks."""
    from qtpy.QtCore import QTimer

    runner, ticks, arrived = widget.runner, [], []
    original = runner._on_return

    def on_return(*args):
        arrived.append(time.perf_counter())
        return original(*args)

    runner._on_return = on_return
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), time.thread_time())))
    timer.start()
    widget.ui.segment_button.click()
    while widget.busy or not arrived:  # (the refinement, then its quiet embeddings ahead)
        app.processEvents()
        time.sleep(0.002)
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    del runner._on_return
    gaps = [(b[0] - a[0], b[1] - a[1], a[0]) for a, b in zip(ticks, ticks[1:])]
    at = next(g for g in gaps if g[2] <= arrived[0] < g[2] + g[0])
    return {"coarse_gap_ms": round(1000 * at[0], 1), "coarse_gap_qt_cpu_ms": round(1000 * at[1], 1),
            "max_qt_cpu_between_ticks_ms": round(1000 * max(g[1] for g in gaps), 1),
            "max_gap_ms": round(1000 * max(g[0] for g in gaps), 1), "ticks": len(ticks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", choices=("ct", "tiled"), default="tiled")
    parser.add_argument("--corrections", type=int, default=3)
    parser.add_argument("--out", default=None, help="PREFIX: PREFIX_N.prof per correction")
    parser.add_argument("--ticks", action="store_true", help="Qt thread CPU per heartbeat gap, no profiler")
    args = parser.parse_args()
    import torch  # noqa: F401  (before Qt)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from resegment_gui import scan

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gui_driver import canvas_drag, wait_idle

    volume, truth, painted, organ = scan(args.scan, 100)
    viewer = napari.Viewer(show=True)
    viewer.add_image(volume, name="scan")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    data = support.data
    data[painted] = truth[painted]
    support.data = data
    app = QApplication.instance()
    widget.segment("all")
    wait_idle(widget, settle_s=0.2)
    candidates = [z for z in organ if z not in painted]
    chosen = candidates[:: max(1, len(candidates) // 6)][: args.corrections]
    for n, z in enumerate(chosen):
        layer_data = support.data
        layer_data[z] = truth[z]
        support.data = layer_data
        rows, cols = np.nonzero(truth[z] == 1)
        c = (int(np.median(rows)), int(np.median(cols)))
        canvas_drag(viewer, support, z, [(c[0] + d, c[1] + d) for d in range(-3, 4)], label=1, brush=3)
        app.processEvents()
        if args.ticks:
            print(json.dumps({"slice": int(z), **ticked(app, widget), "load": round(os.getloadavg()[0], 1),
                              "code": str(Path(__import__("napari_fewshot").__file__).parents[1])}), flush=True)
            continue
        prof = cProfile.Profile(time.thread_time)  # CPU seconds of the Qt thread, not wall (GIL waits, load)
        cpu0 = time.thread_time()
        prof.enable()
        widget.ui.segment_button.click()
        streaming = widget.streaming
        while widget.busy and not (streaming.running and widget.session.prediction is not None):
            app.processEvents()
            time.sleep(0.005)
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)
        prof.disable()
        cpu = time.thread_time() - cpu0
        wait_idle(widget, settle_s=0)
        wait_idle(None, settle_s=0.5)
        print(f"== correction {n} (slice {z}), Qt thread CPU {1000 * cpu:.0f} ms from click to coarse + 0.4 s, "
              f"load {os.getloadavg()[0]:.1f}")
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(key).print_stats(35)
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:9000])
        if args.out:
            prof.dump_stats(f"{args.out}_{n}.prof")
    viewer.close()


if __name__ == "__main__":
    main()
