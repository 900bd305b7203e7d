"""Coarse first, refined as it arrives: the widget's LiteMedSAM refinement in the background.

Segment shows the prototype result as soon as it is there (the core's ``segment(..., refine_later=True)``).
When that result still has refinement to come (``SegmentationResult.refinement``, see core/refinement.py),
a *background* job (plugin/runner.py: progress in the widget's bar and the activity dock, Cancel stops
it, the controls stay enabled) runs ``FewShotSegmenter.refine_result``: the visible slice and its neighbours
first (after a stroke: the corrected slice's), then outward from the painted slices. Each refined slice
replaces its coarse one in the prediction layer; the planes that arrive within ``FLUSH_MS`` are written
together on the Qt thread, with one refresh when one of them is on screen (a plane off screen is read from
the layer's data when its slice is shown). At its end
the 3D clean-up and Check next's ranking of the refined labels take the place of the coarse ones.

Nothing the user drew is overwritten: support slices are not refined (dense mode copies them), a slice
edited on the prediction layer itself keeps its edit, and an edit of the support (a stroke, a correction
seeding its slice, undo) cancels the refinement and drops every plane still to come; moving through the slices
does not (napari re-slicing a layer emits the same ``set_data`` event as an undo: undo_history.edit_events).
A new Segment (or any job) cancels it too and starts once it has stopped (within the LiteMedSAM embedding or
decoder call under way: refine_job's ``stop``); re-segmenting then decodes only the slices whose coarse labels
changed (core/refine.py reuses the others).

When a volume's refinement has ended, a quiet background job embeds ahead of need the slices just beyond each
organ (core/ahead.py), so that a correction which extends an organ does not wait for LiteMedSAM's image encoder.
It shows nothing, and it stops (after its current slice) at the first stroke on the support or when any job starts.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from qtpy.QtCore import QObject, QTimer

from . import image_sets, layers, undo_history, warm_up

FLUSH_MS = 100  # refined planes arriving within this time go into the layer with one refresh
REACH = 3  # the visible slice's neighbours up to this far are refined right after it, nearer first
KIND = "Refining"
AHEAD = "Embedding ahead"


def refine_job(session, result, first, stop=None):
    """Worker: refine ``result`` (a coarse SegmentationResult of ``session``'s segmenter), ``first`` slices
    first; yields a core.refinement.RefinedSlice per slice, returns the refined, cleaned-up result. ``stop``
    (plugin/workers.py hands it the worker's stop request) is checked inside each slice's step, so Cancel or a
    close ends the job within one LiteMedSAM embedding or decoder call instead of a whole batch of slices."""
    warm_up.wait(stop)  # LiteMedSAM's libraries are imported by then (plugin/warm_up.py)
    return (yield from session.segmenter.refine_result(result, first, stop))


def ahead_job(session, result):
    """Worker: LiteMedSAM's embeddings ahead of need for ``result`` (a refined result of ``session``'s segmenter);
    yields a Progress per slice (core/ahead.py), returns how many were computed."""
    from ..core.ahead import embed_ahead

    return (yield from embed_ahead(session.segmenter, result))


class Streaming(QObject):
    """Starts, feeds into the prediction layer and stops the widget's background refinement."""

    def __init__(self, widget):
        super().__init__(widget)
        self.widget, self.viewer = widget, widget.viewer
        self.worker = None
        self._target = None  # (session, image, support, whole) of the result being refined
        self._planes: dict[int, np.ndarray] = {}  # refined planes not yet written
        self._edited: set[int] = set()  # slices the user edited on the prediction layer meanwhile
        self._watched = []  # (event emitter, slot) connected while a refinement runs
        self._pending = False  # the worker returned its result, which _finished has not taken yet
        self._took = False  # _finished has taken this worker's result
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)
        self.ahead = None  # the worker embedding ahead of need (or waiting to), until it ends
        self._ahead_watched = []  # (event emitter, slot) connected while it may run

    @property
    def running(self) -> bool:
        return self.worker is not None

    def follow(self, session, image, support, whole: bool, result):
        """After a result is shown: refine it in the background when it has refinement to come; the worker."""
        if getattr(result, "refinement", None) is None or session is None or session.segmenter is None:
            return None
        self.stop()
        return self._start(session, image, support, whole, result)

    def _start(self, session, image, support, whole: bool, result):
        runner = self.widget.runner  # the job that made `result` is still running: this one waits for it
        if runner.closed or session.prediction not in self.viewer.layers:
            return None
        worker = runner.launch(KIND, refine_job, session, result, around(self.widget.current_slice()),
                               on_return=self._finished, on_report=self._arrived, background=True)
        if worker is None:
            return None
        self.worker, self._target, self._planes, self._edited = worker, (session, image, support, whole), {}, set()
        self._pending = self._took = False
        worker.returned.connect(self._returned)  # direct, so in signal order: before `finished`
        worker.finished.connect(partial(self._ended, worker))
        for emitter, slot in undo_history.edit_events(layers.unwrap(support), self._support_edited):
            self._watch(emitter, slot)
        self._watch(session.prediction.events.paint, self._prediction_edited)
        return worker

    def stop(self) -> None:
        """Cancel the running refinement (within its current embedding or decoder call) and write nothing more of it."""
        if self.worker is not None:
            self.widget.runner.cancel_background()
        self._forget()

    # -- from the worker (Qt thread) ------------------------------------------------------
    def _arrived(self, report) -> None:
        plane = getattr(report, "plane", None)
        if self._target is None or plane is None:
            return
        self._planes[report.index] = plane
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Write the refined planes that arrived into the prediction layer (one refresh)."""
        planes, self._planes = self._planes, {}
        layer = self._layer()
        if layer is None or not planes:
            return
        for i, plane in planes.items():
            if i not in self._edited:
                write_plane(layer.data, i, plane)
        if shows_any(self.viewer, layer, planes):  # a plane off screen is read when its slice is shown: no redraw
            layer.refresh()

    def _returned(self, *_) -> None:
        self._pending = not self._took  # the runner's slot (connected first) may have delivered it already

    def _finished(self, refined) -> None:
        """The refined result: its labels (after the clean-up) replace the layer's; Check next, volumes follow.
        It may come after the worker's `finished` (the runner re-posts a result that arrives while napari's bar
        is updated): the target is kept for it until then (_ended)."""
        self._timer.stop()
        self.flush()  # slices decoded in the last batch arrive with the end: shown as they came, then the final labels
        layer, target = self._layer(), self._target
        self._pending, self._took = False, True
        if self.worker is None:  # the worker has ended already: this was the last thing to do
            self._forget()
        if layer is None:
            return
        session, image, _, whole = target
        result = image_sets.padded_result(image, refined)
        labels = result.labels[0] if layer.data.ndim == 2 else result.labels
        for i in set(result.segmented_slices) - set(result.support_slices) - self._edited:
            if layer.data.ndim == 2:
                layer.data[...] = labels
            else:
                layer.data[i] = labels[i]
        layer.refresh()
        self.widget.corrections.remember(session, result, whole)
        self.widget.explain.remember(image, result, whole)
        self.widget.volumes.refresh()
        n = len(set(result.segmented_slices) - set(result.support_slices))
        seconds = self.widget.runner.elapsed()
        self.widget.ui.status_label.setText(
            f"Refined {n} {image_sets.unit(image)}{'s' * (n != 1)} with LiteMedSAM in {seconds:.1f} s.")
        if layer.data.ndim == 3 and whole:
            self._embed_ahead(session, target[2], refined)

    def _embed_ahead(self, session, support, result) -> None:
        """Queue the quiet job embedding ahead of need for the refined ``result``; a stroke on ``support`` stops it."""
        self._stop_ahead()
        worker = self.widget.runner.launch(AHEAD, ahead_job, session, result, on_return=lambda _: None,
                                           background=True, quiet=True)
        if worker is None:
            return
        self.ahead = worker
        for emitter, slot in undo_history.edit_events(layers.unwrap(support), self._stop_ahead):
            emitter.connect(slot)
            self._ahead_watched.append((emitter, slot))
        worker.finished.connect(partial(self._ahead_ended, worker))

    def _stop_ahead(self, *_) -> None:
        if self.ahead is not None:
            self.widget.runner.cancel_background(self.ahead)
        self._ahead_ended(self.ahead)

    def _ahead_ended(self, worker) -> None:
        if worker is not self.ahead:
            return
        for emitter, slot in self._ahead_watched:
            emitter.disconnect(slot)
        self._ahead_watched, self.ahead = [], None

    def _ended(self, worker) -> None:
        if self.widget.runner.closed:  # the window has gone (its timer with it): a worker that ended after the close
            return
        if worker is self.worker:
            self.flush()
            if self._pending:  # its result has yet to reach _finished: keep the target (and the watched edits)
                self.worker = None
                self._timer.stop()
            else:
                self._forget()

    # -- the user's edits -------------------------------------------------------------------
    def _support_edited(self, *_) -> None:
        self.stop()

    def _prediction_edited(self, *_) -> None:
        self._edited.add(self.widget.current_slice())

    def _watch(self, emitter, slot) -> None:
        emitter.connect(slot)
        self._watched.append((emitter, slot))

    def _forget(self) -> None:
        for emitter, slot in self._watched:
            emitter.disconnect(slot)
        self._watched = []
        self.worker, self._target, self._planes, self._pending = None, None, {}, False
        self._timer.stop()

    def _layer(self):
        """The prediction layer being refined, while it is still in the viewer (else None)."""
        if self._target is None:
            return None
        session, image = self._target[:2]
        layer = session.prediction
        return layer if layer is not None and layer in self.viewer.layers and image in self.viewer.layers else None

    def close(self) -> None:
        self.stop()
        self._stop_ahead()


def around(index: int, reach: int = REACH) -> list[int]:
    """The slices refined first: `index` (the visible one: after a stroke, the corrected slice), then its neighbours
    up to `reach` away, nearer first (before, the corrected slice's neighbours waited behind those of every other
    painted slice). Out-of-range or painted ones are skipped by core.refinement.refine_order. The decoder gives each box
    the same probabilities whatever else it decodes in the same call, so the order changes no label."""
    return [index] + [index + s * d for d in range(1, reach + 1) for s in (-1, 1)]


def shows_any(viewer, layer, indices) -> bool:
    """Whether the canvas may show one of slices `indices` (along the first axis) of `layer`'s (S, H, W) data: False
    only for a 2D view of the viewer's last two axes in which the layer's first axis stays put and shows another
    slice (what a refreshed plane there would redraw is what is on screen already)."""
    dims = viewer.dims
    if layer.data.ndim != 3 or dims.ndisplay != 2 or tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
        return True
    point = np.asarray(dims.point[-3:], float)
    here = layer.world_to_data(point)
    for axis in (1, 2):  # moving across the view must not move along the slices (no rotation out of the plane)
        step = point.copy()
        step[axis] += 1.0
        if abs(float(layer.world_to_data(step)[0]) - float(here[0])) > 1e-6:
            return True
    shown = int(np.clip(round(float(here[0])), 0, layer.data.shape[0] - 1))
    return shown in set(int(i) for i in indices)


def write_plane(data: np.ndarray, index: int, plane: np.ndarray) -> None:
    """Write one slice's (H_i, W_i) labels into a prediction layer's data: (S, H, W) (an image set's planes sit
    at the top left of its padded slices) or (H, W) for a 2D image."""
    h, w = plane.shape
    if data.ndim == 2:
        data[:h, :w] = plane
    else:
        data[index, :h, :w] = plane
