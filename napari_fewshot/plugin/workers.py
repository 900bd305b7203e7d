"""The core's long-running generators, run in napari ``thread_worker`` threads.

Each job is a generator function: it yields :class:`~napari_fewshot.core.Progress` reports (and,
for a quick preview, a :class:`Preview`), and returns its result. :func:`start` wraps it in a
:class:`ClosingWorker`: ``worker.quit()`` stops it between two yields and then *closes* the
generator in the worker thread, so the core's clean-up (``finally`` blocks: fine-tuning puts the
encoder back in eval mode and drops stale features) runs before ``finished`` is emitted. A job function with a
``stop`` parameter gets a callable true once ``quit()`` was called, to stop *inside* a long step (LiteMedSAM's
refinement, core.progress.check_stop): its Stopped ends the worker as a stop at a yield does. :func:`wait_ended`
waits, bounded, for stopped workers to end: a worker still running when Python exits emits into deleted Qt objects
(superqt's "RuntimeError in aborted thread" warning on stderr), so when Python exits (``atexit``, which runs before
Qt's objects are deleted) every worker still running is stopped and waited for, up to STOP_WAIT_S.

A :class:`Job` is built on the Qt thread and carries everything its worker needs: the image's planes as
the core segments them (:class:`~.session.ImagePlanes`, views of the layer's data), a copy of the
support and the settings. No job reads a napari layer.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker

from ..core.progress import Stopped
from ..errors import FewShotError
from . import warm_up
from .session import ImagePlanes, ImageSession, painted_slices


STOP_WAIT_S = 5.0  # at most this long for stopped workers to end (the rest of a step: one LiteMedSAM embedding)
PROGRESS_S = 0.25  # at most one progress report per this many seconds from a segmentation (see thinned)


@dataclass
class Preview:
    """An early result yielded by a job before it finishes (the first slices segmented)."""

    result: Any  # SegmentationResult


@dataclass
class WholeVolume:
    """A SegmentationResult of every slice of a volume, its heatmaps already assembled in the worker.

    heatmaps: class id -> (S, H, W) float32 similarity, so the Qt thread only hands arrays to layers
    (600 slices of 512 x 512 are ~600 MB per class: building them slice by slice would freeze the viewer).
    """

    result: Any  # SegmentationResult; its per-slice similarity is dropped once assembled
    heatmaps: dict[int, np.ndarray]


@dataclass(frozen=True, eq=False)
class Job:
    """What a job needs, captured on the Qt thread (the worker reads nothing else, no layer)."""

    session: ImageSession  # its segmenter and cache state; its layer is the Qt thread's alone
    params: Any  # SegmentationParams
    image: ImagePlanes
    support: np.ndarray | list[np.ndarray] | None = None  # (S, H, W) copy; (H_i, W_i) planes for an image set
    empty_slices: tuple[int, ...] = ()  # unpainted slices checked free of every class (dense mode): support


class ClosingWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator when aborted (runs the core's clean-up), hands a job function
    with a ``stop`` parameter its stop request, and sets ``ended`` once it has run (its last signal emitted)."""

    def __init__(self, func, *args, **kwargs):
        if "stop" in inspect.signature(func).parameters:
            kwargs["stop"] = lambda: self.abort_requested
        super().__init__(func, *args, **kwargs)
        self.ended = threading.Event()

    def start(self):
        global _AT_EXIT
        if not _AT_EXIT:
            atexit.register(stop_at_exit)
            _AT_EXIT = True
        _STARTED.add(self)
        super().start()

    def run(self):
        try:
            super().run()
        finally:
            self.ended.set()

    def work(self):
        try:
            return super().work()
        except Stopped:  # quit() was called and the job stopped inside its step: as if at its next yield
            self.aborted.emit()
            return None
        finally:
            if self.abort_requested:
                self._gen.close()


_STARTED: weakref.WeakSet = weakref.WeakSet()  # the ClosingWorkers started (those not yet ended matter at exit)
_AT_EXIT = False  # stop_at_exit is registered


def stop_at_exit(seconds: float = STOP_WAIT_S) -> bool:
    """Python exits: stop every worker still running and wait for them, at most `seconds`; whether all ended."""
    running = [w for w in list(_STARTED) if not w.ended.is_set()]
    for worker in running:
        worker.quit()
    return wait_ended(running, seconds)


def wait_ended(workers, seconds: float) -> bool:
    """Wait until every started worker of `workers` (ClosingWorkers, None skipped) has ended, at most `seconds` in
    all; whether they all have. Blocks the calling (Qt) thread: call it once the window is hidden."""
    deadline = time.monotonic() + seconds
    for worker in workers:
        if worker is not None and worker.is_running and not worker.ended.wait(max(0.0, deadline - time.monotonic())):
            return False
    return True


def start(job: Callable[..., Generator], *args, on_yield=None, on_return=None, on_error=None,
          on_finish=None, autostart: bool = True, **kwargs) -> GeneratorWorker:
    """Create (and by default start) a worker running ``job(*args, **kwargs)``, signals connected."""
    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True, _worker_class=ClosingWorker, **kwargs)
    for signal, slot in ((worker.yielded, on_yield), (worker.returned, on_return),
                         (worker.errored, on_error), (worker.finished, on_finish)):
        if slot is not None:
            signal.connect(slot)
    if autostart:
        worker.start()
    return worker


def features_job(job: Job, current: int):
    """Compute every slice's features: the current and support slices first, then a preview of the
    current slice's segmentation (when there is paint), then the rest. Returns the number of slices.
    """
    seg = job.session.prepare(job.image, job.params)
    warm_up.start(job.params, seg.cache.stack)  # LiteMedSAM's libraries, before a refinement streams (warm_up.py)
    support = job.support
    first = [current] + (painted_slices(support) if support is not None else [])
    yield from seg.compute_features(indices=first)
    if support is not None and len(first) > 1 and current not in first[1:]:
        try:
            result = yield from seg.segment(support, indices=[current], similarity=False)
            yield preview(seg, result, current, seg.parse_support(support))
        except FewShotError:
            pass  # the support cannot be used yet (Segment will say why); features are what was asked for
    yield from seg.compute_features()
    return len(seg.cache)


def segment_job(job: Job, indices: Sequence[int] | None, similarity: bool, current: int | None = None,
                refine_later: bool = False):
    """Segment ``indices`` (None: every non-support slice); returns the SegmentationResult, or a
    :class:`WholeVolume` when it covers a whole volume with heatmaps. A whole volume's ``current`` (visible)
    slice is segmented first and yielded as a :class:`Preview` (coarse): its matches are remembered, so the
    whole volume then costs no more, and the user sees the slice they look at long before the rest.
    refine_later: a volume's coarse result, its refinement left to plugin/streaming.py (an image set's images
    are refined here, one embedding each)."""
    from ..core.support import require_unpainted

    seg = job.session.prepare(job.image, job.params)
    if refine_later:
        warm_up.start(job.params, seg.cache.stack)  # imported while the coarse result is made (warm_up.py)
    support_set = seg.parse_support(job.support, job.empty_slices)
    if indices is None:
        require_unpainted(support_set, len(seg.cache.stack), job.params.support_mode)  # before the features
    painted = support_set.slice_indices
    wanted = None if indices is None else sorted(set(indices) | set(painted))
    yield from seg.compute_features(wanted, first=painted)  # one features stage, the support's slices first
    if indices is None and current is not None and current not in painted and len(seg.cache.stack) > 1 \
            and seg.cache.stack.is_volume:
        result = yield from seg.segment(job.support, indices=[current], empty_slices=job.empty_slices,
                                        refine_later=refine_later)
        yield preview(seg, result, current, support_set)  # the support parsed above
    result = yield from thinned(seg.segment(job.support, indices=indices, similarity=similarity,
                                            empty_slices=job.empty_slices,
                                            refine_later=refine_later and seg.cache.stack.is_volume
                                            and len(seg.cache.stack) > 1))
    return assemble(result) if indices is None else result


def preview(seg, result, current: int, support_set) -> Preview:
    """The visible slice's coarse result as a :class:`Preview`, showing only the classes `support_set` (the parsed
    support) paints near it (core/postprocess.near_paint: far from the paint, the slice alone draws what the 3D
    clean-up then removes)."""
    from ..core.postprocess import near_paint

    stack = seg.cache.stack
    if not stack.is_3d:
        return Preview(result)  # an image set's images are independent: each shows what was found on it
    result.labels[current] = near_paint(result.labels[current], current, support_set.targets, support_set.class_ids)
    return Preview(result)


def thinned(job: Generator, seconds: float = PROGRESS_S):
    """`job`'s yields, less the reports that come within `seconds` of the last one passed on (its last report
    and every other item pass); returns its result. Each report repaints the widget's bar on the Qt thread
    (40-80 ms on a busy 2-core machine, BENCHMARKS.md "where the time goes now"): a re-segmentation of a few
    seconds made ~30 of them, competing with the matching for the cores."""
    last = -float("inf")
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value
        report = hasattr(item, "done") and hasattr(item, "total")
        if report and item.done < item.total and time.monotonic() - last < seconds:
            continue
        last = time.monotonic()
        yield item


def assemble(result):
    """``result`` as a :class:`WholeVolume` when it is a volume with similarity maps, else unchanged."""
    labels = result.labels
    if not result.similarity or not isinstance(labels, np.ndarray) or labels.ndim != 3:
        return result
    heatmaps = {c: result.similarity_volume(c) for c in sorted(result.similarity)}
    return WholeVolume(dataclasses.replace(result, similarity={}), heatmaps)


def fine_tune_job(job: Job, params):
    """Fine-tune (core FineTuneParams `params`) on the signed slices: the support and the slices marked empty;
    yields Progress(step, steps, loss=...), returns the losses."""
    seg = job.session.prepare(job.image, job.params)
    return (yield from seg.fine_tune(job.support, params, job.empty_slices))
