"""Timestamps of one correction in the window (``resegment_gui.py --trace``): where the seconds between the click
on Segment and the refined labels go, on which thread, with each worker's CPU seconds.

Events (seconds from ``Trace.reset``, the click): the Segment job's worker start and end, the coarse result shown on
the Qt thread (start, end), the refinement queued (``Streaming.follow``) and started (the runner's ``_begin``), its
worker's start, each decoder call (boxes decoded, embeddings computed), the decoding loop's end, the refined
labels' clean-up and ranking (start, end), each batch of refined planes written into the layer (Qt), the final
labels shown (Qt, start, end) and the refinement's end. Totals: the Qt thread's time in the runner's report
handling and in the flushes, the worker's in ``provisional_plane``. Works with whatever of these a checkout has
(an older one without streaming traces what it has).
"""

from __future__ import annotations

import threading
import time
from functools import wraps


class Trace:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.events: list[tuple] = []
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def reset(self) -> None:
        self.t0, self.events, self.totals, self.counts = time.perf_counter(), [], {}, {}

    def mark(self, what: str, **extra) -> None:
        name = "main" if threading.current_thread() is threading.main_thread() else "worker"
        self.events.append((round(time.perf_counter() - self.t0, 3), name, what,
                            round(time.thread_time(), 3), extra or None))

    def add(self, what: str, seconds: float) -> None:
        self.totals[what] = round(self.totals.get(what, 0.0) + seconds, 4)
        self.counts[what] = self.counts.get(what, 0) + 1

    def report(self) -> dict:
        return {"events": self.events, "totals": self.totals, "counts": self.counts}

    # -- wrappers ----------------------------------------------------------------------------
    def around(self, owner, name: str, label: str, total: bool = False) -> None:
        """Wrap plain function/method `owner.name`: a start and an end event (or, total=True, a time total)."""
        fn = getattr(owner, name, None)
        if fn is None:
            return

        @wraps(fn)
        def call(*args, **kwargs):
            start = time.perf_counter()
            if not total:
                self.mark(f"{label} start")
            try:
                return fn(*args, **kwargs)
            finally:
                if total:
                    self.add(label, time.perf_counter() - start)
                else:
                    self.mark(f"{label} end")

        setattr(owner, name, call)

    def generator(self, owner, name: str, label: str) -> None:
        """Wrap generator function `owner.name`: start and end events in the thread that runs it."""
        fn = getattr(owner, name, None)
        if fn is None:
            return
        trace = self

        @wraps(fn)
        def gen(*args, **kwargs):
            trace.mark(f"{label} start")
            try:
                return (yield from fn(*args, **kwargs))
            finally:
                trace.mark(f"{label} end")

        setattr(owner, name, gen)


def install() -> Trace:
    """Patch this checkout's plugin and core with the trace's events; the Trace."""
    import napari_fewshot.core.refine as refine
    import napari_fewshot.plugin.runner as runner
    import napari_fewshot.plugin.widget as widget

    trace = Trace()
    trace.generator(widget, "segment_job", "segment job")
    try:
        import napari_fewshot.core.refinement as refinement
        import napari_fewshot.plugin.streaming as streaming
    except ImportError:  # a revision without streamed refinement
        refinement = streaming = None
    if streaming is not None:
        trace.generator(streaming, "refine_job", "refine job")
        trace.around(streaming.Streaming, "follow", "refinement queued (follow)")
        trace.around(streaming.Streaming, "flush", "flush (Qt)", total=True)
        trace.around(streaming.Streaming, "_finished", "final labels shown (Qt)")
        trace.around(streaming.Streaming, "_ended", "refinement ended (Qt)")
        flush = streaming.Streaming.flush

        @wraps(flush)
        def counted_flush(self, *a, **k):
            if self._planes:
                trace.mark("planes written (Qt)", n=len(self._planes))
            return flush(self, *a, **k)

        streaming.Streaming.flush = counted_flush
    trace.around(widget.FewShotWidget, "_show_result", "coarse shown (Qt)")
    trace.around(runner.JobRunner, "_on_yield", "report handled (Qt)", total=True)
    begin = runner.JobRunner._begin

    def traced_begin(self, worker, kind, *a, **k):
        trace.mark("job begins", kind=kind)
        return begin(self, worker, kind, *a, **k)

    runner.JobRunner._begin = traced_begin
    decode = refine.Refiner._decode

    def traced_decode(self, stack, labels, batch, class_ids, *rest, **named):  # (a `stop` since session 17)
        boxes = sum(len(q.boxes) for _, _, q in batch if q is not None)
        before, fresh = _embedded(self), getattr(self.service, "_trace_boxes", 0)
        start = time.perf_counter()
        decode(self, stack, labels, batch, class_ids, *rest, **named)
        trace.add("decode (worker)", time.perf_counter() - start)
        trace.mark("decoded", slices=[i for i, _, _ in batch], prompted_boxes=boxes,
                   decoded_boxes=getattr(self.service, "_trace_boxes", 0) - fresh,
                   embeddings=_embedded(self) - before, s=round(time.perf_counter() - start, 3))

    refine.Refiner._decode = traced_decode
    trace.generator(refine.Refiner, "refine", "decoding loop")
    trace.around(refinement, "provisional_plane", "provisional_plane (worker)", total=True)
    pending = getattr(refinement, "PendingRefinement", None) if refinement is not None else None
    if pending is not None and hasattr(pending, "finish_coarse"):
        original = pending.finish_coarse.__func__

        def finish_coarse(cls, result, stack, finish, *a, **k):
            def timed(res, *fa, **fk):
                trace.mark("clean-up + ranking start", refined=bool(fk.get("refined")))
                try:
                    return finish(res, *fa, **fk)
                finally:
                    trace.mark("clean-up + ranking end", refined=bool(fk.get("refined")))
            return original(cls, result, stack, timed, *a, **k)

        pending.finish_coarse = classmethod(finish_coarse)
    return trace


def _embedded(refiner) -> int:
    """How many embeddings `refiner`'s service has computed so far (0 when it does not count)."""
    return getattr(refiner.service, "_trace_computed", 0)


def count_embeddings(service) -> None:
    """Count `service`'s computed embeddings (a LiteMedSAMService) for the decode events."""
    compute = service._compute

    def counted(*a, **k):
        service._trace_computed = getattr(service, "_trace_computed", 0) + 1
        return compute(*a, **k)

    service._compute = counted
    decode = service.decode

    def counted_decode(requests, *a, **k):
        service._trace_boxes = getattr(service, "_trace_boxes", 0) + sum(len(r[1]) for r in requests)
        return decode(requests, *a, **k)

    service.decode = counted_decode
