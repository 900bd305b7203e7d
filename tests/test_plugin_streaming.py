"""Coarse first, refined as it arrives (plugin/streaming.py), in the real viewer: Segment shows the coarse
prediction, LiteMedSAM's refined slices then replace it in the background, a stroke cancels it and nothing
painted is overwritten."""

import dataclasses
import os
import time

import numpy as np
import pytest
from conftest import LIVER, ct_crop

from napari_fewshot.core import dice

pytestmark = pytest.mark.gui

SHOTS = os.environ.get("STREAM_SHOTS")  # a folder for screenshots (looked at by hand), none by default
PAINTED = (0, 7)  # of the 8-slice crop, slices 77-84 of the CT sample: liver on every one


@pytest.fixture
def crop_viewer(make_napari_viewer):
    """A viewer with 8 slices of the CT sample, the widget docked (refine on, 128 px features), the liver
    painted on the first and last slice. Returns (viewer, widget, support layer, reference (8, H, W))."""
    return ct_crop(make_napari_viewer, 77, 85, True, PAINTED, 3)


def until(qtbot, condition, timeout_s=600):
    qtbot.waitUntil(condition, timeout=int(timeout_s * 1000))


def shot(viewer, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        viewer.window._qt_window.resize(1500, 950)
        viewer.reset_view()
        viewer.screenshot(os.path.join(SHOTS, name), canvas_only=False)


def test_refined_slices_replace_the_coarse_ones_and_painted_slices_stay(crop_viewer, qtbot, monkeypatch):
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    written = []
    write = streaming.write_plane
    monkeypatch.setattr(streaming, "write_plane", lambda data, i, plane: written.append(i) or write(data, i, plane))
    widget.segment("all")
    until(qtbot, lambda: widget.streaming.running)  # the coarse result is shown, refinement runs
    prediction = widget.prediction_layer
    coarse = prediction.data.copy()
    assert widget.ui.segment_button.isEnabled() and widget.ui.cancel_button.isEnabled()  # never blocks
    assert (coarse[3] == LIVER).any()
    shot(viewer, "1_coarse.png")
    until(qtbot, lambda: not widget.busy)
    refined = prediction.data
    assert written and written[0] == 3  # the visible slice came first
    assert sorted(written) == list(range(1, 7))  # each predicted slice once, as it arrived
    assert not np.array_equal(refined, coarse)  # the refined slices replaced the coarse ones
    for z in PAINTED:
        np.testing.assert_array_equal(refined[z], support.data[z])
    held = [z for z in range(8) if z not in PAINTED]
    print(f"liver Dice coarse {dice(coarse[held] == LIVER, reference[held] == LIVER):.3f}, "
          f"refined {dice(refined[held] == LIVER, reference[held] == LIVER):.3f}")
    assert widget.ui.status_label.text().startswith("Refined 6 slices with LiteMedSAM")
    assert widget.session.last_result is not None and np.array_equal(widget.session.last_result.labels, refined)
    viewer.layers.selection.active = prediction
    shot(viewer, "2_refined.png")


def slowed(real, pause_s: float = 0.3):
    """`real` (streaming.refine_job) with a pause after each report, in the worker thread: a refinement that
    OpenVINO finishes in a blink stays observable long enough to be cancelled and restarted."""
    def job(*args):
        inner = real(*args)
        try:
            report = next(inner)
            while True:
                time.sleep(pause_s)
                report = inner.send((yield report))
        except StopIteration as stop:
            return stop.value
    return job


def test_a_stroke_cancels_the_refinement_and_a_new_segment_restarts_it(crop_viewer, qtbot, monkeypatch):
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    monkeypatch.setattr(streaming, "refine_job", slowed(streaming.refine_job))
    arrived = []
    widget.streaming._arrived = (lambda real: lambda report: arrived.append(report.index) or real(report))(
        widget.streaming._arrived)
    widget.segment("all")
    until(qtbot, lambda: len(arrived) >= 1)
    support.paint((2, 30, 60), 3, refresh=True)  # a stroke on slice 2 (a real press would seed it first)
    assert not widget.streaming.running  # cancelled at once: nothing more is written
    after_stroke = widget.prediction_layer.data.copy()
    until(qtbot, lambda: not widget.busy)
    time.sleep(0.3)
    qtbot.wait(300)
    np.testing.assert_array_equal(widget.prediction_layer.data, after_stroke)
    assert "cancelled" in widget.ui.status_label.text() and len(arrived) < 6
    shot(viewer, "3_cancelled.png")

    started = len(arrived)
    widget.segment("all")  # the stroke's slice is support now; the others reuse what was refined
    until(qtbot, lambda: widget.streaming.running)
    widget.segment("all")  # a new Segment while refining: the refinement stops, the Segment runs after it
    until(qtbot, lambda: not widget.busy and not widget.streaming.running)
    assert widget.ui.status_label.text().startswith("Refined 5 slices")
    assert len(arrived) > started
    np.testing.assert_array_equal(widget.prediction_layer.data[2], support.data[2])  # painted: as painted


def test_moving_through_the_slices_keeps_the_refinement_and_an_undo_cancels_it(crop_viewer, qtbot, monkeypatch):
    """napari emits the support's set_data when it shows another slice as well as on an undo: a clinician who
    scrolls while the refinement streams must not lose it (it did: "Refining: cancelled."); an undo is an edit."""
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    monkeypatch.setattr(streaming, "refine_job", slowed(streaming.refine_job))
    arrived = []
    widget.streaming._arrived = (lambda real: lambda report: arrived.append(report.index) or real(report))(
        widget.streaming._arrived)
    support.paint((0, 5, 5), 1, refresh=True)  # a stroke on a painted slice: something to undo later
    widget.segment("all")
    until(qtbot, lambda: len(arrived) >= 1)
    emitted = []
    support.events.set_data.connect(emitted.append)
    for z in (5, 1, 6, 2):
        viewer.dims.set_current_step(0, z)
        qtbot.wait(20)
    support.events.set_data.disconnect(emitted.append)
    assert emitted  # napari did re-slice the support (what used to cancel the refinement)
    assert widget.streaming.running and "cancelled" not in widget.ui.status_label.text()
    support.undo()
    assert not widget.streaming.running  # the undo cancelled it at once
    until(qtbot, lambda: not widget.busy)
    assert "cancelled" in widget.ui.status_label.text() and len(arrived) < 6


def test_a_segment_refused_while_the_coarse_job_ends_keeps_its_refinement(crop_viewer, qtbot):
    """Segment clicked between the coarse result and the end of its job (the refinement is queued behind that job):
    the click is refused ("still running"), and the queued refinement must not give way to it: before, it was
    dropped, so it never ran and the widget stayed "refining" for ever."""
    viewer, widget, support, reference = crop_viewer
    start, clicked = widget.streaming._start, []

    def start_then_click(*args):
        worker = start(*args)
        if not clicked:  # the user clicks Segment again at this very moment
            clicked.append(widget.segment("all"))
        return worker

    widget.streaming._start = start_then_click
    widget.segment("all")
    until(qtbot, lambda: bool(clicked) and not widget.busy and not widget.streaming.running, timeout_s=120)
    assert widget.ui.status_label.text().startswith("Refined 6 slices"), widget.ui.status_label.text()


def test_load_prototypes_shows_the_coarse_result_and_streams_its_refinement(crop_viewer, qtbot, tmp_path, monkeypatch):
    """Load prototypes refines as Segment does: the bank's coarse labels at once, LiteMedSAM's slices after."""
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    target = tmp_path / "liver.fewshot"
    widget.save_prototypes(str(target))
    until(qtbot, lambda: not widget.busy)
    copy = viewer.add_image(np.array(viewer.layers["CT crop"].data), name="CT copy", contrast_limits=(-200, 300))
    widget.set_image_layer(copy)
    widget.ui.support_combo.setCurrentText("")  # no paint on the copy: Load creates an empty support
    written = []
    write = streaming.write_plane
    monkeypatch.setattr(streaming, "write_plane", lambda data, i, plane: written.append(i) or write(data, i, plane))
    widget.load_prototypes(str(target))
    until(qtbot, lambda: widget.streaming.running)  # the coarse result is shown, refinement runs behind it
    prediction = widget.prediction_layer
    coarse = prediction.data.copy()
    assert prediction.data.shape == copy.data.shape and (coarse == LIVER).any()
    assert widget.ui.segment_button.isEnabled() and widget.ui.cancel_button.isEnabled()  # never blocks
    until(qtbot, lambda: not widget.busy)
    assert written and len(written) == len(set(written)) and set(written) <= set(range(8))
    assert not np.array_equal(prediction.data, coarse)  # the refined slices replaced the coarse ones
    assert widget.ui.status_label.text().startswith("Refined")
    assert not support.data[[z for z in range(8) if z not in PAINTED]].any()  # the first scan's paint untouched
    shot(viewer, "3_bank_refined.png")


def test_a_segmentation_reports_progress_at_most_four_times_a_second():
    """workers.thinned: the reports that follow the last one passed within PROGRESS_S are dropped (each repaints
    the bar on the Qt thread), its last report, every other item and the result pass."""
    from napari_fewshot.core import Progress
    from napari_fewshot.plugin.workers import PROGRESS_S, Preview, thinned

    def job():
        for n in range(1, 41):
            yield Progress(n, 40, f"slice {n}")
            if n == 20:
                yield Preview("early")
                time.sleep(PROGRESS_S * 1.2)
        return "result"

    out, gen = [], thinned(job())
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    done = [item.done for item in out if isinstance(item, Progress)]
    assert result == "result" and [item for item in out if isinstance(item, Preview)] == [Preview("early")]
    assert done[0] == 1 and done[-1] == 40 and 21 in done  # the first, the last, the first after a pause
    assert len(done) == 3


def test_the_final_labels_are_shown_when_the_result_comes_after_the_worker_has_ended(crop_viewer, qtbot, monkeypatch):
    """The runner re-posts a job's result that arrives while napari's bar is updated (runner._guarded), so the
    refinement's `finished` can be handled before its result: the clean-up's labels must still replace the
    streamed ones (before, Streaming had forgotten its target by then and dropped them; seen as a status line
    left at "Refining done" in benchmarks/resegment_gui.py)."""
    from qtpy.QtCore import QTimer

    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer

    def cleaned(session, result, first):  # no LiteMedSAM: the "refined" result is the coarse one less slice 3
        labels = result.labels.copy()
        labels[3] = 0
        return dataclasses.replace(result, labels=labels, refinement=None)
        yield  # a generator job, as the real one

    monkeypatch.setattr(streaming, "refine_job", cleaned)
    runner = widget.runner
    on_return = runner._on_return

    def late(callback, value):  # as runner._guarded does while napari's bar is being updated
        if runner.kind == streaming.KIND:
            QTimer.singleShot(300, lambda: on_return(callback, value))
        else:
            on_return(callback, value)

    monkeypatch.setattr(runner, "_on_return", late)
    widget.segment("all")
    until(qtbot, lambda: widget.prediction_layer is not None and not widget.busy, 300)
    qtbot.wait(1000)  # the re-posted result
    assert widget.ui.status_label.text().startswith("Refined 6 slices with LiteMedSAM")
    assert not widget.prediction_layer.data[3].any()  # the final labels, not the streamed (coarse) ones
    assert widget.streaming._target is None and not widget.streaming.running  # and nothing left connected


def test_embeddings_ahead_run_quietly_after_the_refinement_and_a_stroke_stops_them(crop_viewer, qtbot, monkeypatch):
    """After a volume's refinement a quiet background job embeds ahead of need (core/ahead.py): the status line keeps
    "Refined ...", the controls stay enabled, and the next stroke on the support stops it after its current slice."""
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    steps = []
    real = streaming.ahead_job

    def ahead_job(session, result):  # the real one (nothing to embed on this 8-slice crop), then a slow stand-in
        from napari_fewshot.core import Progress

        assert (yield from real(session, result)) == 0
        for n in range(1, 200):
            steps.append(n)
            time.sleep(0.05)
            yield Progress(n, 200, "embedded")
        return 200

    monkeypatch.setattr(streaming, "ahead_job", ahead_job)
    widget.segment("all")
    until(qtbot, lambda: len(steps) >= 3)  # refinement done, the job embedding ahead runs
    assert widget.ui.status_label.text().startswith("Refined 6 slices with LiteMedSAM")  # not touched by it
    assert widget.ui.segment_button.isEnabled() and not widget.ui.cancel_button.isEnabled()
    # the widget looks idle, so what the user asks for does not wait for it: Reset weights, Explain, heatmaps now
    assert widget.busy and not widget.runner.occupied
    warnings = []
    monkeypatch.setattr("napari_fewshot.plugin.widget.show_warning", warnings.append)
    widget.reset_weights()
    assert not warnings  # no "Wait for the running job to finish": there is no job the user can see
    support.paint((2, 30, 60), 3, refresh=True)  # a stroke
    until(qtbot, lambda: widget.streaming.ahead is None and not widget.busy, 60)
    stopped = len(steps)
    qtbot.wait(300)
    assert len(steps) <= stopped + 1 and stopped < 199  # it stopped at the stroke
    assert widget.ui.status_label.text().startswith("Refined 6 slices")  # no "cancelled" for a job nobody started


def test_streamed_planes_off_screen_are_written_without_a_redraw(crop_viewer, qtbot, monkeypatch):
    """A refined plane goes into the prediction layer's data as it arrives, but the layer is redrawn only when one
    of the planes written is the slice on screen (each redraw costs the Qt thread tens of ms under software
    OpenGL while the refinement runs beside it); a slice shown later shows its refined plane."""
    from napari.layers import Labels

    from napari_fewshot.core.refinement import RefinedSlice
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    planes = {}

    def stand_in(session, result, first):  # no LiteMedSAM: each predicted slice's coarse plane less its first row
        labels = result.labels.copy()
        order = [3, 1, 2, 4, 5, 6]
        for n, i in enumerate(order):
            labels[i, :12] = 0
            planes[i] = labels[i].copy()
            time.sleep(0.25)  # each plane in a flush of its own
            yield RefinedSlice(n + 1, len(order), f"refined slice {i + 1}", index=i, plane=planes[i])
        return dataclasses.replace(result, labels=labels, refinement=None)

    def no_ahead(session, result):
        return 0
        yield

    monkeypatch.setattr(streaming, "refine_job", stand_in)
    monkeypatch.setattr(streaming, "ahead_job", no_ahead)
    redrawn, unseen = [], []  # the planes written since the last redraw, at each redraw that follows some
    refresh, write = Labels.refresh, streaming.write_plane

    def counted_refresh(self, *a, **k):
        if unseen:
            redrawn.append(sorted(unseen))
            unseen.clear()
        return refresh(self, *a, **k)

    monkeypatch.setattr(Labels, "refresh", counted_refresh)
    monkeypatch.setattr(streaming, "write_plane", lambda data, i, plane: unseen.append(i) or write(data, i, plane))
    widget.segment("all")
    until(qtbot, lambda: len(planes) == 6 and not widget.busy, 300)
    layer = widget.prediction_layer
    # one redraw while streaming, for the visible slice 3 (a plane arriving with it in the same flush goes along),
    # the others written without one; then the final labels' redraw (was one redraw per flush: 5-6)
    assert len(redrawn) == 2 and 3 in redrawn[0] and 3 not in redrawn[1] and len(redrawn[0]) <= 2
    for i, plane in planes.items():
        np.testing.assert_array_equal(layer.data[i], plane)
    viewer.dims.set_current_step(0, 5)  # a slice written off screen shows its refined plane
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), planes[5])
    widget.streaming.viewer.dims.ndisplay = 3  # in 3D every plane is on screen
    assert streaming.shows_any(viewer, layer, [1])
    viewer.dims.ndisplay = 2
    viewer.dims.order = (1, 0, 2)  # a view across the slices shows every one of them
    assert streaming.shows_any(viewer, layer, [1])
    viewer.dims.order = (0, 1, 2)
    assert not streaming.shows_any(viewer, layer, [1]) and streaming.shows_any(viewer, layer, [5])


@pytest.mark.parametrize("background", [True, False])
def test_a_jobs_reports_repaint_the_bar_a_few_times_a_second(crop_viewer, qtbot, monkeypatch, background):
    """A streamed refinement reports every slice, dozens within a second when their decodes are reused, and so does
    a segmentation; each report shown repaints the window on the Qt thread (in OpenGL: plugin/activity.py). A job's
    reports are shown at most every runner.SHOW_S (the newest on the next tick), and the last one always (session
    21: also a foreground job's)."""
    from napari_fewshot.core import Progress

    viewer, widget, support, reference = crop_viewer
    runner = widget.runner
    shown = []
    show = runner._show_bar
    monkeypatch.setattr(runner, "_show_bar",
                        lambda done, total, text: shown.append((done, total)) or show(done, total, text))

    def burst():
        for n in range(1, 61):
            time.sleep(0.002)
            yield Progress(n, 60, f"refined slice {n}")
        time.sleep(0.4)
        return n

    reports = []
    runner.launch("Refining", burst, on_return=lambda _: None, on_report=reports.append, background=background)
    until(qtbot, lambda: not widget.busy, 60)
    assert len(reports) == 60  # every report still reaches the job's own slot (the refined planes)
    progress = [done for done, total in shown if total == 60]
    assert progress[-1] == 60 and len(progress) <= 6  # was one repaint per report


def test_the_visible_slices_neighbours_are_refined_right_after_it(crop_viewer, qtbot, monkeypatch):
    """After a stroke the visible slice is the corrected one: its neighbours (up to streaming.REACH away) are refined
    first, nearer first, not after those of every other painted slice."""
    from napari_fewshot.core.refinement import refine_order
    from napari_fewshot.plugin import streaming

    viewer, widget, support, reference = crop_viewer
    asked = []

    def stand_in(session, result, first):
        asked.append(refine_order(result.refinement.indices, first, result.refinement.painted))
        return dataclasses.replace(result, refinement=None)
        yield

    monkeypatch.setattr(streaming, "refine_job", stand_in)
    viewer.dims.set_current_step(0, 2)
    widget.segment("all")
    until(qtbot, lambda: bool(asked) and not widget.busy, 300)
    assert asked == [[2, 1, 3, 4, 5, 6]]  # was [2, 1, 6, 5, 3, 4]: the visible slice, then outward from 0 and 7
