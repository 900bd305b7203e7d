"""Cancel and close while LiteMedSAM's refinement streams, in a real viewer (issue 21; session 17, helper "tidy").

Each run is a fresh Python process (the warning it counts is printed as Python exits): a napari viewer under Xvfb,
the CT sample (Plugins > Few-shot segmentation docked, CPU, 128 px prototype features so the coarse result takes
seconds; LiteMedSAM refines at its own 256 px), the liver painted from the reference on slices 80 and 100, the
visible slice 90, Segment clicked. Then:

1. when refined slices have arrived (a batch of SLICES_PER_BATCH slices ends a step) and a random 0-1.5 s more (the
   next step under way), Cancel is clicked (the activity dock's Cancel calls the same runner.cancel): the time from
   the click to the worker's ``finished`` (emitted in the worker thread) is recorded;
2. Segment again (slices refined already are reused), and once 4 new slices have arrived and a random 0-1.5 s more,
   the viewer is closed, the way a user closes it: ``close_run`` closes the window inside ``napari.run()`` (the
   window's close button: the event loop ends with the last window, ``napari.run`` returns, the script ends);
   ``close_script`` (the walkthrough's way) calls ``viewer.close()``, runs Qt's events 0.5 s and ends the script.

The parent counts, per run, superqt's ``RuntimeWarning: RuntimeError in aborted thread`` (and any traceback) on the
child's stderr, and the seconds from the close to the process's exit. ``--code`` runs the children on another
checkout (e.g. main's tree exported to a folder), so that both sides run interleaved under the same load:

    xvfb-run -a -s "-screen 0 1600x1000x24" env PYTHONPATH=$PWD .venv/bin/python benchmarks/exit_while_refining.py \\
        --runs 10 --code before=/tmp/tidy_main --code after=$PWD --out benchmarks/results/s17_tidy/exit_while_refining.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARNING = "RuntimeError in aborted thread"
PAINTED = (80, 100)  # the liver spans slices 69-111 of the CT sample
VISIBLE = 90


def child(mode: str, seed: int) -> None:
    import torch  # noqa: F401  (before Qt)

    # isort: split
    import dataclasses

    import napari
    import numpy as np
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_fewshot.plugin import workers

    rng = random.Random(seed)

    if hasattr(workers, "stop_at_exit"):  # how long Python's exit waits for the workers (absent before session 17)
        def timed(real=workers.stop_at_exit):
            t0 = time.perf_counter()
            ended = real()
            print(json.dumps({"exit_wait_s": round(time.perf_counter() - t0, 3), "all_ended": ended}), flush=True)
            return ended

        workers.stop_at_exit = timed
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    params = widget.params
    widget.params = lambda: dataclasses.replace(params(), input_size=128)
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)
    support = widget.create_support_layer()
    data = support.data
    for z in PAINTED:
        data[z][reference[z] == 1] = 1
    support.data = data
    viewer.dims.set_current_step(0, VISIBLE)
    arrived = []
    widget.streaming._arrived = (lambda real: lambda report: arrived.append(report.index) or real(report))(
        widget.streaming._arrived)

    def pump(seconds: float, until=None) -> bool:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            if until is not None and until():
                return True
            app.processEvents()
            time.sleep(0.01)
        return until is not None and until()

    def mid_step(new: int) -> dict:
        """Segment; wait until `new` more refined slices have arrived, then a random 0-1.5 s (inside the next step)."""
        before = len(arrived)
        widget.ui.segment_button.click()
        if not pump(900, lambda: widget.streaming.running and len(arrived) >= before + new):
            raise SystemExit(f"no refined slice arrived: {widget.ui.status_label.text()}")
        extra = rng.uniform(0, 1.5)
        pump(extra)
        return {"arrived": len(arrived), "extra_s": round(extra, 2), "streaming": widget.streaming.running}

    out = {"mode": mode, "seed": seed, "load": os.getloadavg()[0]}
    step = mid_step(1)
    worker = widget.streaming.worker
    ended = []
    worker.finished.connect(lambda: ended.append(time.perf_counter()), Qt.ConnectionType.DirectConnection)
    clicked = time.perf_counter()
    widget.ui.cancel_button.click()
    pump(60, lambda: bool(ended) and not widget.busy)
    out["cancel"] = {**step, "to_ended_s": round(ended[0] - clicked, 3) if ended else None,
                     "status": widget.ui.status_label.text()}
    shots = os.environ.get("EXIT_SHOTS")  # a folder: screenshots after Cancel and before the close
    if shots:
        viewer.screenshot(os.path.join(shots, f"seed{seed}_1_cancelled.png"), canvas_only=False)
    out["close"] = mid_step(4)
    if shots:
        viewer.screenshot(os.path.join(shots, f"seed{seed}_2_refining_before_close.png"), canvas_only=False)
    out["close_at"] = time.time()
    print(json.dumps(out), flush=True)
    if mode == "close_run":
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, viewer.window._qt_window.close)
        QTimer.singleShot(60_000, app.quit)  # only if the loop outlived its last window
        napari.run()
    else:
        viewer.close()
        pump(0.5)


def parent(args) -> None:
    codes = dict(c.split("=", 1) for c in args.code)
    rows = []
    for run in range(args.runs):
        mode = ("close_run", "close_script")[run % 2]
        for name, code in (list(codes.items()) if run % 2 == 0 else list(codes.items())[::-1]):  # alternate who is first
            with tempfile.TemporaryDirectory(prefix="exit_refining_autosave_") as autosave:  # removed after the run
                env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1", "NAPARI_FEWSHOT_AUTOSAVE_DIR": autosave}
                started = time.time()
                done = subprocess.run([sys.executable, __file__, "--child", mode, "--seed", str(run)], env=env,
                                      capture_output=True, text=True, timeout=1800)
                exited = time.time()
            info = {}
            for line in done.stdout.splitlines():  # the run's facts, then (after) how long the exit waited
                if line.startswith("{"):
                    info.update(json.loads(line))
            row = {"run": run, "code": name, **info, "rc": done.returncode,
                   "warnings": done.stderr.count(WARNING), "tracebacks": done.stderr.count("Traceback"),
                   "close_to_exit_s": round(exited - info["close_at"], 2) if "close_at" in info else None,
                   "run_s": round(exited - started, 1), "stderr_tail": done.stderr[-600:]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary(rows)}, indent=1))
    print(json.dumps(summary(rows), indent=1))


def summary(rows) -> dict:
    out = {}
    for name in dict.fromkeys(r["code"] for r in rows):
        mine = [r for r in rows if r["code"] == name]
        cancels = sorted(r["cancel"]["to_ended_s"] for r in mine
                         if r.get("cancel", {}).get("to_ended_s") is not None)
        out[name] = {"runs": len(mine), "runs_with_warning": sum(r["warnings"] > 0 for r in mine),
                     "warnings": sum(r["warnings"] for r in mine), "tracebacks": sum(r["tracebacks"] for r in mine),
                     "by_mode": {m: sum(r["warnings"] > 0 for r in mine if r.get("mode") == m) for m in
                                 ("close_run", "close_script")},
                     "cancel_to_ended_s": {"median": cancels[len(cancels) // 2] if cancels else None,
                                           "max": cancels[-1] if cancels else None, "all": cancels},
                     "close_to_exit_s": sorted(r["close_to_exit_s"] for r in mine if r["close_to_exit_s"] is not None),
                     "load": [round(r.get("load", 0), 1) for r in mine]}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["close_run", "close_script"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--code", action="append", default=[], help="NAME=FOLDER of a napari_fewshot checkout")
    parser.add_argument("--out", default="benchmarks/results/s17_tidy/exit_while_refining.json")
    a = parser.parse_args()
    if a.child:
        child(a.child, a.seed)
    else:
        parent(a)
