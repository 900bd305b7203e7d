"""How long the Qt thread is blocked putting a whole-volume result with heatmaps into layers; and (--refine)
the longest stall of the window while LiteMedSAM's refinement streams in.

    xvfb-run -a python benchmarks/ui_blocking.py [S H W CLASSES]   (default 600 512 512 2)
    xvfb-run -a python benchmarks/ui_blocking.py --refine [FIRST LAST] [--no-warm-up]   (CT sample slices, default 60 90)

--refine: a real viewer with slices FIRST..LAST of the CT sample, the liver painted on two of them, Segment
all; from the coarse result until the refinement has ended, a 10 ms QTimer heartbeat on the Qt thread: the
gaps between its ticks are the window's stalls (a timer heartbeat, as issue 21 asks, not a timed test),
reported for the coarse phase (click to coarse result) and the refinement phase apart; benchmarks/heartbeat.py's
watchdog gives each stall over 80 ms the threads' stacks and CPU / run-queue time, and the garbage collector's
passes over 20 ms are listed (STALL_DUMP=FILE: faulthandler's dump of every thread at each stall over 100 ms).
--no-warm-up: LiteMedSAM's libraries are not imported ahead (plugin/warm_up.start off), as before.

before: layers.update_prediction / update_heatmaps of BASELINE (7ee6270), fed the per-slice similarity
        dict (written slice by slice on the Qt thread);
after:  workers.assemble builds the (S, H, W) float32 volumes in the worker; the Qt thread only hands
        arrays over. A synthetic result (random labels and similarity planes) of a real viewer and widget.
"""
import torch  # noqa: F401  (before Qt)

import importlib.util
import subprocess
import sys
import time

import numpy as np

S, H, W, K = (int(a) for a in sys.argv[1:5]) if len(sys.argv) > 4 and sys.argv[1] != "--refine" else (600, 512, 512, 2)
BASELINE = "7ee6270"  # the last landed code before issue 11


def old_layers():
    """napari_fewshot.plugin.layers as of BASELINE, loaded beside the working-tree one."""
    src = subprocess.run(["git", "show", f"{BASELINE}:napari_fewshot/plugin/layers.py"], capture_output=True,
                         text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("napari_fewshot.plugin._layers_head", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "napari_fewshot.plugin"
    exec(compile(src, "layers_head.py", "exec"), module.__dict__)
    return module


def fake_result(rng):
    from napari_fewshot.core.segmenter import SegmentationResult

    labels = (rng.random((S, H // 8, W // 8)) * (K + 1)).astype(np.uint8).repeat(8, 1).repeat(8, 2)
    plane = rng.random((H, W)).astype(np.float16)
    similarity = {c: {i: plane.copy() for i in range(S)} for c in range(1, K + 1)}
    return SegmentationResult(labels, list(range(1, K + 1)), [], list(range(S)), similarity)


def settle(app, seconds=1.0):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        app.processEvents()


def timed(app, widget, session, image, support, result):
    """(seconds inside _show_result, seconds of the first event-loop pass after it: the redraw)."""
    import cProfile
    import os
    import pstats

    profile = cProfile.Profile() if os.environ.get("PROFILE") else None
    t0 = time.perf_counter()
    if profile:
        profile.enable()
    widget._show_result(session, image, support, True, result)
    t1 = time.perf_counter()
    if profile:
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(18)
    app.processEvents()
    return t1 - t0, time.perf_counter() - t1


def _as_called_today(function):
    """BASELINE's layer function, called with today's arguments: results.show now also passes arguments that did
    not exist then (update_heatmaps' prediction and limits), which the old function never used."""
    import inspect

    accepted = len(inspect.signature(function).parameters)
    return lambda *args: function(*args[:accepted])


def main():
    import os
    import tempfile

    os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="fewshot-ui-blocking-")  # not the user's
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_fewshot.plugin import layers, widget as widget_module, workers

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.integers(-1000, 1000, (S, H, W), dtype=np.int16), name="ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    support.data[10, 100:200, 100:200] = 1
    session = widget.session
    settle(app)
    head = old_layers()
    current = {name: getattr(layers, name) for name in ("update_prediction", "update_heatmaps")}
    print(f"volume {S}x{H}x{W}, {K} classes")
    for label, patch in ((f"before ({BASELINE} layers, per-slice dict)", head), ("after (worker-assembled volumes)", None)):
        for name in ("update_prediction", "update_heatmaps"):
            setattr(widget_module.layers, name, _as_called_today(getattr(patch, name)) if patch else current[name])
        for run in ("new layers", "existing layers"):
            if run == "new layers":
                for layer in [session.prediction, *session.heatmaps.values()]:
                    if layer is not None and layer in viewer.layers:
                        viewer.layers.remove(layer)
                session.prediction, session.heatmaps = None, {}
                settle(app, 0.5)
            result = fake_result(rng)
            worker_s = 0.0
            if patch is None:
                t = time.perf_counter()
                result = workers.assemble(result)
                worker_s = time.perf_counter() - t
            inside, redraw = timed(app, widget, session, image, support, result)
            extra = f", worker-side assembly {worker_s:.2f} s (not on the Qt thread)" if patch is None else ""
            print(f"{label}, {run}: Qt thread blocked {inside:.2f} s in _show_result + {redraw:.2f} s first "
                  f"event-loop pass{extra}")
            del result
            settle(app, 0.5)
    viewer.close()


def refine_heartbeat(first: int, last: int, warm_up: bool = True) -> None:
    """The window's stalls while refinement streams (see the module docstring); prints one JSON line."""
    import json
    import os

    import napari
    from qtpy.QtWidgets import QApplication

    from heartbeat import Heartbeat
    from napari_fewshot.plugin import warm_up as warm_up_module
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    ct = read_volume(CT_IMAGE)
    volume, liver = ct.data[first:last], read_labels(CT_LABELS, like=ct)[first:last] == 1
    viewer = napari.Viewer(show=True)
    viewer.add_image(volume, name="CT", contrast_limits=(-200, 300))
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    data = support.data
    for z in (2, len(volume) - 3):
        data[z][liver[z]] = 1
    support.data = data
    app = QApplication.instance()
    heart = Heartbeat()
    if os.environ.get("STALL_DUMP"):  # every thread's stack at each stall over 100 ms, GIL or not
        heart.dump_to(os.environ["STALL_DUMP"])
    if not warm_up:  # as before: LiteMedSAM's libraries are first imported by the refinement itself
        warm_up_module.start = lambda *_: None
    heart.start()  # from the click: the coarse phase's stalls are reported too
    widget.segment("all")
    while widget.busy and not widget.streaming.running:  # features and the coarse result
        app.processEvents()
        time.sleep(0.002)
    coarse_s = time.perf_counter() - heart.t0
    heart.mark("coarse shown")
    while widget.busy:
        app.processEvents()
        time.sleep(0.002)
    refined_s = time.perf_counter() - heart.t0
    heart.mark("refinement ended")
    settle(app, 0.5)
    heart.stop()
    print(json.dumps({"slices": [first, last], "warm_up": warm_up, "coarse_s": round(coarse_s, 1),
                      "refinement_s": round(refined_s - coarse_s, 1),
                      "coarse_phase": heart.gaps(0, coarse_s),
                      "refinement_phase": heart.gaps(coarse_s, refined_s + 0.5), **heart.summary(),
                      "status": widget.ui.status_label.text(),
                      "load_average": [round(x, 1) for x in os.getloadavg()]}, indent=1))
    viewer.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--refine"]:
        numbers = [int(a) for a in sys.argv[2:] if not a.startswith("--")]
        refine_heartbeat(*(numbers or (60, 90)), warm_up="--no-warm-up" not in sys.argv)
    else:
        main()
