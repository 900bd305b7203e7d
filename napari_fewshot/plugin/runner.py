"""Running the widget's jobs one at a time: busy state, progress, errors, cancel, the live lane.

A *job* (compute features, segment, fine-tune) disables the conflicting controls, reports each
:class:`~napari_fewshot.core.Progress` in the widget's progress bar and in napari's activity dock,
and shows failures as notifications (a plain sentence for FewShotError; anything else with its
traceback sent to the log, never a dialog). Every job ends with a status line saying how: done
(with its time), cancelled, or failed and why. A *live update* is a short job the user did not ask
for explicitly: it runs only when nothing else does, and a job started meanwhile waits for it,
since both use the same segmenter. A *background* job (the streamed refinement, plugin/streaming.py) shows its
progress and takes Cancel like a job but leaves the controls enabled: a job launched meanwhile cancels it
and starts when it has stopped (after its current step), and a live update waits for it. A *quiet* background job
(LiteMedSAM's embeddings ahead of need, plugin/streaming.py) is all that and leaves the status line, the bars and
Cancel alone, and its failure goes to the log only; queued after a job, it starts once that job's follow-up and the
idle step have run (behind a follow-up job).

napari's progress bar calls ``QApplication.processEvents()`` whenever it changes, so any worker
signal can be delivered *inside* an update of it. The runner therefore never touches that bar
from a worker signal: reports go to the widget's own bar and label (which never process events)
and a timer copies the newest one into napari's bar; worker signals that arrive during that copy
are re-posted to run after it. Nothing re-enters, and the bar is never closed while it is updated.

After the widget closes (or is deleted with its viewer) workers are asked to stop and their late
signals are dropped, so nothing touches deleted Qt objects. The timer is a child of the widget's
progress bar, whose ``destroyed`` signal stops everything: a parentless timer belongs to Python, and
when the window outlives ``viewer.close()`` until the interpreter exits, Python's clean-up destroys its
objects in no set order, so that timer could be gone before the bar (a RuntimeError in a Qt slot:
SIGABRT). A child is deleted only after its parent's ``destroyed`` has been handled.

A stopped worker ends at its next yield, or inside its step where the job checks its ``stop`` (the streamed
refinement: within one LiteMedSAM embedding or decoder call, plugin/workers.py). Closing waits for nothing: the
window closes at once. When Python then exits, plugin/workers.stop_at_exit waits (at most STOP_WAIT_S) for any
worker still running, so that none emits into Qt objects deleted at exit (superqt's "RuntimeError in aborted
thread" warning on stderr).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ..errors import FewShotError
from .activity import slow_activity_indicator
from .panel import Panel
from .workers import Preview, start

logger = logging.getLogger(__name__)

PUSH_INTERVAL_MS = 150  # how often napari's activity-dock bar catches up with the newest report
SHOW_S = 0.25  # a job's reports are shown in the widget at most this often (the newest on a tick; activity.py)
LINGER_MS = 1000  # a finished job's bar stays in napari's dock this long, for the next job (_keep_spare)


def stage_of(p) -> str:
    """What a report counts, for the bar's text: "features", "matching", "segmenting", "fine-tuning" ... (each
    stage of a job has its own total, so the bar names the stage whose fraction it shows)."""
    if p.loss is not None:
        return "fine-tuning"
    word = (p.message.split() or ["working"])[0]
    return STAGE_WORDS.get(word, word)


STAGE_WORDS = {"features": "features", "matched": "matching", "segmented": "segmenting", "refined": "refining"}


class JobRunner:
    """One job (plus at most one live update) at a time for the widget whose controls are ``ui``."""

    def __init__(self, ui: Panel, on_idle: Callable[[], None]):
        self.ui = ui
        self._on_idle = on_idle  # called when a job has finished (and no follow-up was queued)
        self.worker = None
        self.kind = ""
        self.started = 0.0
        self.after: Callable[[], object] | None = None  # follow-up run once the job has finished
        self.steps_done = 0  # fine-tuning steps reported so far
        self.live_worker = None
        self._queued = None  # a job waiting for the live update to finish
        self._pbar = None  # napari.utils.progress shown in the activity dock
        self._spare = None  # the last job's napari bar, for a job that starts within LINGER_MS (_keep_spare)
        self._latest = None  # newest Progress not yet copied into napari's bar
        self._unshown = None  # newest Progress of a background job not yet shown in the widget (_progress)
        self._shown_at = 0.0  # when the widget last showed a report
        self._in_napari = False  # inside a call on napari's bar (which processes events)
        self._returned = False  # the running job returned its result
        self._ended = ""  # "cancelled" or "failed": what the bar says when the job ends without a result
        self.background = False  # the running job is a background job (see the module docstring)
        self.quiet = False  # the running job is a quiet background job: no status line, no bars
        self._waiting = None  # (worker, kind, background, quiet): a job launched while another was running
        self.closed = False
        self._timer = QTimer(ui.progress_bar)  # dies with the bar, after the bar's destroyed (see the docstring)
        self._timer.setInterval(PUSH_INTERVAL_MS)
        self._timer.timeout.connect(self._push)
        self._linger = QTimer(ui.progress_bar)
        self._linger.setSingleShot(True)
        self._linger.setInterval(LINGER_MS)
        self._linger.timeout.connect(self._retire_spare)
        ui.progress_bar.destroyed.connect(lambda *_: self.quit_all())  # the viewer closed with the widget

    @property
    def busy(self) -> bool:
        """A job (background ones too) or a live update runs, or a job waits to start."""
        return self.worker is not None or self.live_worker is not None or self._waiting is not None

    @property
    def occupied(self) -> bool:
        """Busy, not counting a quiet background job: nobody asked for that one, the widget looks idle, and whatever
        job the user starts stops it (see the module docstring)."""
        return self.busy and not (self.quiet and self.live_worker is None and self._waiting is None)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def launch(self, kind: str, fn, *args, on_return, on_preview=None, on_report=None, background=False,
               quiet=False):
        """Start job ``fn(*args)``; None when one is already running (the user is told). A running background job
        is cancelled and this one starts once it has stopped; a background job waits for any job to finish
        (None when one is already waiting). ``on_report``: called with each Progress (after the bar shows it).
        quiet (a background job only): no status line, bars or Cancel (see the module docstring)."""
        from napari.utils.notifications import show_warning

        if self.closed:
            return None
        refused = self.worker is not None and not self.background and not background  # a user job runs already
        if self._waiting is not None and self._waiting[2] and not background and not refused:
            self._waiting = None  # a background job that has not started gives way (to a job that will run only)
        if self._waiting is not None or refused:
            if not background:
                kind = self._waiting[1] if self._waiting is not None else self.kind
                show_warning(f"{kind} is still running; wait for it or press Cancel.")
            return None
        worker = start(fn, *args, on_return=self._guarded(partial(self._on_return, on_return)),
                       on_error=self._guarded(self._on_error), on_finish=self._guarded(self._on_finish),
                       autostart=False)
        worker.yielded.connect(self._guarded(partial(self._on_yield, worker, on_preview, on_report)))
        worker.aborted.connect(self._guarded(self._on_abort))
        if self.worker is not None:  # starts once the running job has ended (_on_finish); a background one is stopped
            self._waiting = (worker, kind, background, quiet and background)
            if self.background and not self._returned:
                self.worker.quit()
            return worker
        self._begin(worker, kind, background, quiet and background)
        return worker

    def _begin(self, worker, kind: str, background: bool, quiet: bool = False) -> None:
        self.worker, self.kind, self.started, self.steps_done = worker, kind, time.perf_counter(), 0
        self.background, self.quiet = background, quiet
        self._returned, self._latest, self._ended, self._unshown = False, None, "", None
        if not quiet:
            self._set_busy(True)
            self.ui.status_label.setText(f"{kind}...")
            self._show_bar(0, 1, f"{kind}...")  # still until the first report: a busy bar animates (activity.py)
            self._timer.start()
        if self.live_worker is not None:
            self._queued = worker
        else:
            worker.start()

    def cancel_background(self, worker=None) -> None:
        """Stop a running background job after its current step (nothing else); only ``worker`` when given."""
        if self._waiting is not None and self._waiting[2] and worker in (None, self._waiting[0]):
            self._waiting = None  # it never started
        elif self.worker is not None and self.background and not self._returned and worker in (None, self.worker):
            self.worker.quit()

    def launch_live(self, fn, *args, on_return, on_error, on_finish):
        """Start a live update unless anything runs; returns the worker or None."""
        if self.busy or self.closed:
            return None

        def finished():
            self.live_worker = None
            queued, self._queued = self._queued, None
            if queued is not None:
                queued.start()
            else:
                on_finish()

        self.live_worker = start(fn, *args, on_return=self._guarded(on_return), on_error=self._guarded(on_error),
                                 on_finish=self._guarded(finished))
        return self.live_worker

    def cancel(self) -> None:
        """Stop the running job after its current step."""
        if self.worker is not None:
            self.ui.status_label.setText(f"{self.kind}: stopping...")
            self.worker.quit()

    def quit_all(self) -> None:
        """Stop everything (the widget is closing or gone); no follow-ups, no more widget updates."""
        if self.closed:
            return
        self.closed = True
        self.after = None
        self._timer.stop()
        for worker in (self.worker, self.live_worker, self._queued, (self._waiting or (None,))[0]):
            if worker is not None:
                worker.quit()
        pbar, self._pbar = self._pbar, None
        self._close_bar(pbar)
        self._retire_spare()

    # -- worker signals ---------------------------------------------------------------------
    def _guarded(self, slot: Callable) -> Callable:
        """``slot`` for a worker signal: dropped once closed; re-posted while napari's bar is being
        updated (its processEvents delivers signals), so it never runs inside that update."""

        def call(*args):
            if self.closed:
                return
            if self._in_napari:
                QTimer.singleShot(0, partial(call, *args))
                return
            slot(*args)

        return call

    def _on_yield(self, worker, on_preview, on_report, item) -> None:
        if worker is not self.worker or self.quiet:
            return  # a late report of a job that has finished, or a quiet job's
        if isinstance(item, Preview):
            if on_preview is not None:
                on_preview(item.result)
        else:
            self._progress(item)
            if on_report is not None:
                on_report(item)

    def _progress(self, p) -> None:
        """Show report ``p`` in the widget (never processes events); napari's bar gets it on the next tick. A
        job's reports (a segmentation or a streamed refinement: one per slice, dozens within a second) are shown at
        most every SHOW_S, the newest on the next tick, a stage's last at once: each shown report repaints the
        window (activity.py)."""
        if p.loss is not None:
            self.steps_done = p.done
        self._latest = p
        if p.done < p.total and time.perf_counter() - self._shown_at < SHOW_S:
            self._unshown = p
            return
        self._show(p)

    def _show(self, p) -> None:
        self._unshown, self._shown_at = None, time.perf_counter()
        self.ui.status_label.setText(self._describe(p))
        self._show_bar(p.done, max(p.total, 1), f"{stage_of(p)}: %v of %m")  # a count: stages have their own totals

    def _describe(self, p) -> str:
        text = f"{self.kind}: {p.message}"
        return text + (f" (loss {p.loss:.3f})" if p.loss is not None else "")

    def _on_return(self, on_return, value) -> None:
        """The job's result: "done" first, then ``on_return`` (which may say more); its failure is the job's."""
        self._returned, self._unshown = True, None
        if not self.quiet:
            self.ui.status_label.setText(f"{self.kind} done in {self.elapsed():.1f} s.")
        try:
            on_return(value)
        except Exception as exc:  # a bug showing the result must not leave the job looking done
            self._on_error(exc)

    def _on_error(self, exc: Exception) -> None:
        """Say why the job failed: FewShotError's sentence as it is, anything else with its type (and
        its traceback in the log)."""
        plain = isinstance(exc, FewShotError)
        if self.quiet:  # nobody asked for it: nothing to show
            logger.warning("%s failed", self.kind, exc_info=exc)
            self._ended = "failed"
            return
        if not plain:
            logger.error("%s failed", self.kind, exc_info=exc)
        message = str(exc) if plain else f"{exc.__class__.__name__}: {exc}"
        self._returned = False
        self.after = None
        self.ui.status_label.setText(f"{self.kind} failed: {message}")
        self._ended = "failed"
        show_error(message if plain else f"{self.kind} failed: {message}")

    def _on_abort(self) -> None:
        if not self.quiet:
            self.ui.status_label.setText(f"{self.kind}: cancelled.")
        self.after = None
        self._ended = "cancelled"

    def _on_finish(self) -> None:
        """Back to idle; then the follow-up job or ``on_idle``; napari's bar last: kept a moment for the next job."""
        pbar, self._pbar = self._pbar, None
        self._timer.stop()
        self._latest = self._unshown = None
        quiet, self.worker, self.background, self.quiet = self.quiet, None, False, False
        self._set_busy(False)
        if self._returned and not quiet:
            self._show_bar(1, 1, "done")
        elif not quiet:  # cancelled or failed: the bar says so, never a fraction of work that will not be finished
            self._show_bar(0, 1, self._ended or "stopped")
        self._ended = ""
        after, self.after = self.after, None
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[3]:  # launched while a background job was stopping: its turn now
            self._begin(*waiting)
            if after is not None:
                self.after = after
        else:
            follow_up = after is not None and after() is not None
            if not follow_up:  # a follow-up job calls on_idle when it finishes
                self._on_idle()
            if waiting is not None and self.worker is None and self._waiting is None and not self.closed:
                self._begin(*waiting)  # a quiet job queued behind this one: after the idle step
            elif waiting is not None and self._waiting is None and not self.closed:
                self._waiting = waiting  # behind the follow-up job
        self._keep_spare(pbar)

    # -- napari's activity-dock bar -----------------------------------------------------------
    def _push(self) -> None:
        """Copy the newest report into napari's bar (timer tick); a nested tick returns at once."""
        if self._unshown is not None and self.worker is not None and not self.closed:
            self._show(self._unshown)
        if self._latest is None or self._in_napari or self.worker is None or self.closed:
            return
        p, self._latest = self._latest, None
        self._in_napari = True
        try:
            if self._pbar is None:
                self._pbar = self._take_spare() or self._new_bar(p)
            pbar = self._pbar
            if pbar.total != p.total:
                pbar.total = p.total
            pbar.update(p.done - pbar.n)  # emits the value event (assigning n does not)
            pbar.set_description(self._describe(p))
        finally:
            self._in_napari = False

    def _new_bar(self, p):
        from napari.utils import progress

        bar = progress(total=p.total, desc=self.kind)
        slow_activity_indicator(True)
        return bar

    def _keep_spare(self, pbar) -> None:
        """Keep a finished job's bar in the dock for LINGER_MS, then close it, unless a job takes it over first: a
        volume's refinement starts as its coarse result arrives, and a new bar costs the Qt thread a repaint of the
        window twice that of an update (~65 against ~33 ms of wall time in software OpenGL, load ~5)."""
        self._retire_spare()
        if pbar is None or self.closed:
            self._close_bar(pbar)
            return
        self._spare = pbar
        self._linger.start()

    def _take_spare(self):
        """The lingering bar, for the job whose first report is being pushed (None when there is none)."""
        pbar, self._spare = self._spare, None
        if pbar is not None:
            self._linger.stop()
        return pbar

    def _retire_spare(self) -> None:
        pbar, self._spare = self._spare, None
        self._close_bar(pbar)

    def _close_bar(self, pbar) -> None:
        """Close napari's bar ``pbar``, after the update of it in progress if there is one. napari's indicator gets
        its speed back; once closed (quit_all: windows may be in the middle of being destroyed) only after the
        current event, when the windows left are whole (looking for it among dying widgets crashed Qt)."""
        if pbar is None:
            return
        if self._in_napari:
            QTimer.singleShot(0, partial(self._close_bar, pbar))
            return
        self._in_napari = True
        try:
            pbar.close()
            if self.closed:
                QTimer.singleShot(0, partial(slow_activity_indicator, False))
            else:
                slow_activity_indicator(False)
        finally:
            self._in_napari = False

    def _show_bar(self, done: int, total: int, text: str) -> None:
        """The widget's bar at ``done`` of ``total`` with ``text`` (Qt's ``%v`` / ``%m``: the value / total)."""
        bar = self.ui.progress_bar
        bar.setUpdatesEnabled(False)  # QProgressBar repaints at once on a new value or range (the window with it):
        try:  # ~5-50 ms of the Qt thread each time, on a result's arrival; painted with the next frame instead
            bar.setRange(0, total)
            bar.setValue(done)
            bar.setFormat(text)
            bar.setTextVisible(True)
        finally:
            bar.setUpdatesEnabled(True)  # (schedules the repaint)

    def _set_busy(self, busy: bool) -> None:
        for control in self.ui.job_controls():
            control.setEnabled(not busy or self.background)
        self.ui.cancel_button.setEnabled(busy)
