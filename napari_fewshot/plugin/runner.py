"""Running the widget's jobs one at a time: busy state, progress, errors, cancel, the live lane.

A *job* (compute features, segment, fine-tune) disables the conflicting controls, reports each
:class:`~napari_fewshot.core.Progress` in the widget's progress bar and in napari's activity dock,
and shows failures as notifications (a plain sentence for FewShotError; anything else with its
traceback sent to the log, never a dialog). A *live update* is a short job the user did not ask
for explicitly: it runs only when nothing else does, and a job started meanwhile waits for it,
since both use the same segmenter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from napari.utils.notifications import show_error

from ..errors import FewShotError
from .panel import Panel
from .workers import Preview, start

logger = logging.getLogger(__name__)


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

    @property
    def busy(self) -> bool:
        return self.worker is not None or self.live_worker is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def launch(self, kind: str, fn, *args, on_return, on_preview=None):
        """Start job ``fn(*args)``; None when one is already running (the user is told)."""
        from napari.utils.notifications import show_warning

        if self.worker is not None:
            show_warning(f"{self.kind} is still running; wait for it or press Cancel.")
            return None
        worker = start(fn, *args, on_return=on_return, on_error=self._on_error, on_finish=self._on_finish,
                       autostart=False)
        worker.yielded.connect(partial(self._on_yield, worker, on_preview))
        self.worker, self.kind, self.started, self.steps_done = worker, kind, time.perf_counter(), 0
        self._set_busy(True)
        self.ui.status_label.setText(f"{kind}...")
        if self.live_worker is not None:
            self._queued = worker
        else:
            worker.start()
        return worker

    def launch_live(self, fn, *args, on_return, on_error, on_finish):
        """Start a live update unless anything runs; returns the worker or None."""
        if self.busy:
            return None

        def finished():
            self.live_worker = None
            queued, self._queued = self._queued, None
            if queued is not None:
                queued.start()
            else:
                on_finish()

        self.live_worker = start(fn, *args, on_return=on_return, on_error=on_error, on_finish=finished)
        return self.live_worker

    def cancel(self) -> None:
        """Stop the running job after its current step."""
        if self.worker is not None:
            self.ui.status_label.setText(f"{self.kind}: stopping...")
            self.worker.quit()

    def quit_all(self) -> None:
        """Stop everything (the widget is closing); no follow-ups."""
        self.after = None
        for worker in (self.worker, self.live_worker, self._queued):
            if worker is not None:
                worker.quit()

    def _on_yield(self, worker, on_preview, item) -> None:
        if worker is not self.worker:
            return  # a late report of a job that has finished
        if isinstance(item, Preview):
            if on_preview is not None:
                on_preview(item.result)
        else:
            self._progress(item)

    def _progress(self, p) -> None:
        from napari.utils import progress

        text = f"{self.kind}: {p.message}"
        if p.loss is not None:
            self.steps_done = p.done
            text += f" (loss {p.loss:.3f})"
        self.ui.status_label.setText(text)
        self.ui.progress_bar.setRange(0, max(p.total, 1))
        self.ui.progress_bar.setValue(p.done)
        # Last: napari's progress bar may process events, so the job's finish can run inside these calls.
        if self._pbar is None:
            pbar = progress(total=p.total, desc=self.kind)
            if self.worker is None:
                pbar.close()
                return
            self._pbar = pbar
        self._pbar.total, self._pbar.n = p.total, p.done
        self._pbar.set_description(text)

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, FewShotError):
            show_error(str(exc))
        else:
            logger.error("%s failed", self.kind, exc_info=exc)
            show_error(f"{self.kind} failed: {exc.__class__.__name__}: {exc}")
        self.after = None

    def _on_finish(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._set_busy(False)
        self.ui.progress_bar.setValue(self.ui.progress_bar.maximum())
        after, self.after = self.after, None
        if after is None or after() is None:  # a follow-up job calls on_idle when it finishes
            self._on_idle()

    def _set_busy(self, busy: bool) -> None:
        for control in self.ui.job_controls():
            control.setEnabled(not busy)
        self.ui.cancel_button.setEnabled(busy)
