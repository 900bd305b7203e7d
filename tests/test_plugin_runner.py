"""The job runner on the CT sample: progress never nests the Qt event loop, every job says how it ended,
closing the viewer mid-job is quiet."""

import sys
import threading
import time

import pytest
from conftest import paint_support, use_input_size, wait_idle

pytestmark = pytest.mark.gui

SMALL_INPUT = 128  # px: features for the 112 CT slices in a few seconds instead of ~15 s


@pytest.fixture
def fast_ct(ct):
    """The CT sample with the encoder fed 128 px slices, so a whole job takes seconds."""
    viewer, widget, reference = ct
    use_input_size(widget, SMALL_INPUT)
    return viewer, widget, reference


@pytest.fixture
def uncaught(monkeypatch):
    """Exceptions that reached sys.excepthook or threading.excepthook during the test."""
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, exc, tb: seen.append(exc))
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def _track_depth(monkeypatch, runner, name):
    """Wrap ``runner.<name>``; returns a list whose only item is the deepest nesting of its calls seen."""
    deepest, depth = [0], [0]
    original = getattr(runner, name)

    def wrapped(*args, **kwargs):
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(runner, name, wrapped)
    return deepest


def test_segment_without_features_never_nests_progress(fast_ct, qtbot, notes, uncaught, monkeypatch):
    """The user's report: Segment (heatmaps on) before Compute features recursed inside napari's bar."""
    viewer, widget, reference = fast_ct
    runner = widget.runner
    paint_support(widget, reference)
    widget.ui.heatmap_check.setChecked(True)
    depths = {name: _track_depth(monkeypatch, runner, name) for name in ("_on_yield", "_progress", "_on_finish")}
    bars = []
    new_bar = runner._new_bar
    monkeypatch.setattr(runner, "_new_bar", lambda p: bars.append(new_bar(p)) or bars[-1])

    widget.segment("all")
    wait_idle(qtbot, widget, timeout_s=120)
    qtbot.wait(300)  # let a last timer tick run

    assert {name: d[0] for name, d in depths.items()} == {"_on_yield": 1, "_progress": 1, "_on_finish": 1}
    assert uncaught == [] and [m for s, m in notes if s == "error"] == []
    assert widget.ui.status_label.text().startswith("Segmented 109 slices from 3 support slices in ")
    assert widget.heatmap_layers and widget.prediction_layer is not None
    assert len(bars) == 1 and bars[0].n > 0 and bars[0].desc.startswith("Segmenting: ")  # the dock saw progress
    qtbot.waitUntil(lambda: runner._spare is None, timeout=5_000)  # kept runner.LINGER_MS for a next job
    assert runner._pbar is None and bars[0] not in type(bars[0])._all_instances  # and the bar was closed

    # The next job's bar starts from 0, not from the previous job's 100 %.
    widget.segment("current")
    assert widget.ui.progress_bar.value() == widget.ui.progress_bar.minimum()
    wait_idle(qtbot, widget)
    assert widget.ui.status_label.text().startswith("Segmented 1 slice from 3 support slices in ")


def test_cancelled_job_says_so(fast_ct, qtbot):
    viewer, widget, reference = fast_ct
    paint_support(widget, reference)
    widget.compute_features()
    qtbot.waitUntil(lambda: widget.ui.progress_bar.value() > 0, timeout=60_000)
    widget.cancel()
    wait_idle(qtbot, widget)
    assert widget.ui.status_label.text() == "Computing features: cancelled."
    assert widget.runner._pbar is None


def test_failed_job_says_why(fast_ct, qtbot, notes):
    viewer, widget, reference = fast_ct
    support = widget.create_support_layer()
    data = support.data
    data[:, :4, :4] = 1  # every slice painted: nothing left to segment
    support.data = data
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert widget.ui.status_label.text().startswith("Segmenting failed: Every slice is painted")
    assert any(s == "error" and "Every slice is painted" in m for s, m in notes)


@pytest.mark.parametrize("what", ["viewer", "dock widget"])
def test_closing_mid_job_is_quiet(fast_ct, qtbot, capfd, uncaught, what):
    """Closing stops the worker; its late signals touch no deleted Qt object and print nothing."""
    viewer, widget, reference = fast_ct
    paint_support(widget, reference)
    widget.ui.heatmap_check.setChecked(True)
    worker = widget.segment("all")
    qtbot.waitUntil(lambda: widget.ui.progress_bar.value() > 0, timeout=60_000)
    done = threading.Event()
    worker.finished.connect(done.set)
    capfd.readouterr()

    (viewer if what == "viewer" else widget).close()
    deadline = time.perf_counter() + 30
    while not done.is_set() and time.perf_counter() < deadline:
        qtbot.wait(50)
    qtbot.wait(500)  # timers and late signals

    assert done.is_set(), "the worker did not stop after the viewer closed"
    assert uncaught == []
    assert capfd.readouterr().err == ""


def _python_owned_qt_objects(*owners):
    """The QObjects among the attributes of ``owners`` that Python (not a Qt parent) owns."""
    from qtpy import sip
    from qtpy.QtCore import QObject

    return [value for owner in owners for value in vars(owner).values()
            if isinstance(value, QObject) and not sip.isdeleted(value) and sip.ispyowned(value)]


@pytest.mark.parametrize("when", ["job running", "job finished"])
def test_closing_the_viewer_touches_no_deleted_qt_object(fast_ct, qtbot, when):
    """The scripted runs that aborted: a script keeps the window past ``viewer.close()``, so it is deleted as
    the interpreter exits, when Python destroys the objects it owns in no set order. Here the worst order:
    every Python-owned QObject of the runner and the widget first, then the window (the progress bar's
    ``destroyed`` stops the runner). Nothing may raise into the excepthook (in a script: SIGABRT)."""
    from qtpy import sip

    viewer, widget, reference = fast_ct
    runner = widget.runner
    paint_support(widget, reference)
    viewer.dims.set_current_step(0, 85)
    widget.segment("current" if when == "job finished" else "all")
    if when == "job finished":
        wait_idle(qtbot, widget)
    else:
        qtbot.waitUntil(lambda: widget.ui.progress_bar.value() > 0, timeout=60_000)
    window = viewer.window._qt_window  # what the script still refers to

    with qtbot.capture_exceptions() as raised:
        viewer.close()
        for obj in _python_owned_qt_objects(runner, widget):
            sip.delete(obj)
        sip.delete(window)
        qtbot.wait(300)  # late worker signals, timers

    assert raised == [], [str(e[1]) for e in raised]
    assert runner.closed and runner._pbar is None  # stopped, napari's bar closed


def test_a_job_leaves_the_window_still(fast_ct, qtbot, monkeypatch):
    """Session 21: every animation frame recomposes the whole window in OpenGL (software OpenGL: ~40 % of a core),
    so the widget's bar is never in its busy state, and napari's activity indicator turns at a tenth of its speed
    while our job has a bar in the dock, at its own speed again after."""
    from qtpy.QtGui import QMovie

    from napari_fewshot.plugin.activity import SPEED_PERCENT, activity_movies

    viewer, widget, reference = fast_ct
    runner = widget.runner
    paint_support(widget, reference)
    totals, speeds = [], []
    show_bar, push = runner._show_bar, runner._push
    monkeypatch.setattr(runner, "_show_bar", lambda done, total, text: totals.append(total) or show_bar(done, total, text))

    def pushed():
        push()
        if runner._pbar is not None:
            speeds.append([(m.speed(), m.state()) for m in activity_movies()])

    monkeypatch.setattr(runner, "_push", pushed)
    runner._timer.timeout.disconnect()
    runner._timer.timeout.connect(runner._push)
    assert activity_movies(), "napari's activity indicator (loading.gif) was not found"

    widget.segment("all")
    assert widget.ui.progress_bar.maximum() > 0  # not busy from the click on
    wait_idle(qtbot, widget, timeout_s=120)
    qtbot.waitUntil(lambda: runner._spare is None, timeout=5_000)  # its bar closed (runner.LINGER_MS)

    assert totals and min(totals) > 0, "the widget's bar was put in its busy (animated) state"
    running = [s for s in speeds if s]
    assert running and all(speed == SPEED_PERCENT for s in running for speed, _ in s)
    assert any(state == QMovie.MovieState.Running for s in running for _, state in s)  # turning, slowly
    assert [m.speed() for m in activity_movies()] == [100] * len(activity_movies())  # its own speed again


def test_a_job_right_after_another_takes_over_its_bar(fast_ct, qtbot, monkeypatch):
    """Session 22: a volume's refinement starts as its coarse result arrives. A new bar in napari's dock repaints the
    window twice as long as an update of one (software OpenGL), and it was part of the window's one > 100 ms stall
    there; so a finished job's bar stays runner.LINGER_MS, a job starting meanwhile takes it over (from 0, with its
    own name), and it is closed LINGER_MS after the last job, with napari's indicator at its own speed again."""
    from napari_fewshot.core import Progress
    from napari_fewshot.plugin import runner as runner_module
    from napari_fewshot.plugin.activity import SPEED_PERCENT, activity_movies

    viewer, widget, reference = fast_ct
    runner = widget.runner
    bars = []
    new_bar = runner._new_bar
    monkeypatch.setattr(runner, "_new_bar", lambda p: bars.append(new_bar(p)) or bars[-1])

    def job(steps):
        for n in range(1, steps + 1):
            time.sleep(0.1)
            yield Progress(n, steps, f"step {n}")
        return steps

    runner.launch("First", job, 5, on_return=lambda _: None)
    runner.after = lambda: runner.launch("Second", job, 4, on_return=lambda _: None)
    qtbot.waitUntil(lambda: not runner.busy and runner._spare is not None, timeout=30_000)
    assert len(bars) == 1  # one bar for both jobs
    bar = bars[0]
    assert bar.total == 4 and bar.n <= 4 and bar.desc.startswith("Second: ")  # the second job's own count and name
    assert [m.speed() for m in activity_movies()] == [SPEED_PERCENT] * len(activity_movies())
    qtbot.waitUntil(lambda: runner._spare is None, timeout=runner_module.LINGER_MS + 3_000)
    assert bar not in type(bar)._all_instances  # closed once nothing took it over
    assert [m.speed() for m in activity_movies()] == [100] * len(activity_movies())
