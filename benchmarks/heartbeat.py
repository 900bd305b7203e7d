"""A 10 ms QTimer heartbeat on the Qt thread and a watchdog thread that says where each stall came from.

The heartbeat's gaps are the window's stalls (issue 21: "the window never stalls more than 100 ms").
A stall has two possible causes, which the watchdog tells apart: the Qt thread busy in some code (ours,
napari's, vispy's), or the process not scheduled (a shared machine) / the Qt thread waiting for the GIL
that a worker holds. Whenever the last tick is more than ``late_s`` old, the watchdog samples the Python
stacks of the main thread and of every other thread (``sys._current_frames``) every ``interval_s``; when the
heartbeat ticks again, the samples of that stall are kept with it. Per stall: its start (seconds since
``start()``), its length, every thread's CPU and run-queue milliseconds over it (/proc/self/task/*/schedstat: a
Qt thread that waited for a core was not scheduled; one that neither ran nor queued waited for the GIL), and with
``stacks=True`` the main thread's most frequent stack (innermost frames first). ``stacks`` is off by default:
walking another thread's frames with ``sys._current_frames`` crashed CPython 3.11.7 twice here (segmentation
fault in the watchdog); ``dump_to`` (faulthandler, C) gives every thread's stack at each stall over 100 ms instead.
"""

from __future__ import annotations

import collections
import faulthandler
import gc
import os
import sys
import threading
import time
import traceback


def _threads() -> dict[int, tuple[str, int, int]]:
    """{native thread id: (name, ns on a CPU, ns waiting for a CPU)} of this process (/proc/self/task/*/schedstat)."""
    out = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                run, wait = (int(x) for x in f.read().split()[:2])
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended
            continue
        out[int(task)] = (name, run, wait)
    return out


def _delta(before: dict, after: dict, names: dict) -> list[dict]:
    """Per thread that ran or waited ≥ 5 ms between two _threads() snapshots: ms on a CPU, ms waiting for one."""
    rows = []
    for tid, (name, run, wait) in after.items():
        _, run0, wait0 = before.get(tid, (name, run, wait))
        cpu, queued = (run - run0) / 1e6, (wait - wait0) / 1e6
        if cpu >= 5 or queued >= 5:
            rows.append({"thread": names.get(tid, name), "cpu_ms": round(cpu, 1), "runqueue_ms": round(queued, 1)})
    return sorted(rows, key=lambda r: -r["cpu_ms"])


def thread_times() -> dict:
    """A snapshot for ``thread_use``: {native thread id: (name, ns on a CPU, ns waiting for one)}, with the
    Python names of the threads that have one ("main" for the main thread)."""
    names = {t.native_id: ("main" if t is threading.main_thread() else t.name) for t in threading.enumerate()}
    return {tid: (names.get(tid, name), run, wait) for tid, (name, run, wait) in _threads().items()}


def thread_use(before: dict, after: dict, wall_s: float) -> list[dict]:
    """Per thread that ran ≥ 5 ms between two ``thread_times`` snapshots `wall_s` apart: ms on a CPU, ms waiting
    for a CPU (run queue), and ms doing neither ("off_ms": asleep, blocked on a lock, the GIL or a condition).
    A thread that started in between counts from its start, so its off_ms is an upper bound."""
    before = {tid: before.get(tid, (name, 0, 0)) for tid, (name, _, _) in after.items()}
    rows = _delta(before, after, {tid: name for tid, (name, _, _) in after.items()})
    for row in rows:
        row["off_ms"] = round(wall_s * 1000 - row["cpu_ms"] - row["runqueue_ms"], 1)
    return rows


def _stack(frame, depth: int = 14) -> tuple[str, ...]:
    """Innermost first: 'file.py:line function' of up to `depth` frames."""
    out = []
    for summary in reversed(traceback.extract_stack(frame)[-depth:]):
        name = summary.filename.rsplit("/", 2)
        out.append(f"{'/'.join(name[-2:])}:{summary.lineno} {summary.name}")
    return tuple(out)


class Heartbeat:
    """``ticks`` (perf_counter seconds) from a QTimer on the Qt thread; ``stalls`` from the watchdog thread."""

    def __init__(self, interval_ms: int = 10, late_s: float = 0.08, sample_s: float = 0.005, stacks: bool = False):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.stalls: list[dict] = []
        self.marks: list[tuple[float, str]] = []  # (time, what) events a caller notes, e.g. "coarse shown"
        self._late, self._sample, self._stacks = late_s, sample_s, stacks
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._dump = None
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(target=self._watch, daemon=True, name="heartbeat-watchdog")
        self.t0 = 0.0
        self.collections: list[dict] = []  # the garbage collector's passes over 20 ms: they hold the GIL
        self._gc_started = {}

    def dump_to(self, path: str, after_s: float = 0.1) -> None:
        """Also let faulthandler's C thread (it needs no GIL) write every thread's stack to `path` whenever the
        heartbeat is `after_s` late: one traceback set per stall over `after_s`, in order, even when a worker
        holds the GIL (which stops the Python watchdog, and the heartbeat, from running)."""
        self._dump, self._dump_after = open(path, "w"), after_s

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        if self._dump is not None:
            faulthandler.dump_traceback_later(self._dump_after, file=self._dump)

    def _gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started[threading.get_ident()] = now
            return
        took = now - self._gc_started.pop(threading.get_ident(), now)
        if took > 0.02:
            self.collections.append({"at_s": round(now - took - self.t0, 3), "ms": round(took * 1000, 1),
                                     "generation": info["generation"], "thread": threading.current_thread().name})

    def start(self) -> None:
        gc.callbacks.append(self._gc)
        self.t0 = time.perf_counter()
        self.ticks.append(self.t0)
        self._timer.start()
        self._thread.start()

    def mark(self, what: str) -> None:
        self.marks.append((round(time.perf_counter() - self.t0, 3), what))

    def stop(self) -> None:
        self._timer.stop()
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        if self._dump is not None:
            faulthandler.cancel_dump_traceback_later()
            self._dump.close()
        self._stop.set()
        self._thread.join(1.0)

    def _watch(self) -> None:
        me = threading.get_ident()
        main: collections.Counter = collections.Counter()
        others: collections.Counter = collections.Counter()
        last_seen, in_stall = None, False
        history = collections.deque([(time.perf_counter(), _threads())], maxlen=32)  # every ~20 ms
        while not self._stop.is_set():
            last = self.ticks[-1] if self.ticks else None
            now = time.perf_counter()
            if last is not None and now - last > self._late and last == (last_seen if in_stall else last):
                in_stall, last_seen = True, last
                names = {t.ident: t.name for t in threading.enumerate()}
                native = {t.native_id: ("main" if t.ident == self._main else t.name) for t in threading.enumerate()}
                for ident, frame in (sys._current_frames() if self._stacks else {}).items():
                    if ident == self._main:
                        main[_stack(frame)] += 1
                    elif ident != me and frame is not None:
                        stack = _stack(frame, 8)
                        if not any("threading.py" in s and "wait" in s for s in stack[:2]):
                            others[(names.get(ident, str(ident)), stack)] += 1
            elif in_stall and last != last_seen:  # the heartbeat ticked again: the stall is over
                end = self.ticks[-1]
                after = _threads()
                taken, before = next(((t, b) for t, b in reversed(history) if t <= last_seen), history[0])
                self.stalls.append({
                    "threads": _delta(before, after, native), "counted_from_ms": round((taken - last_seen) * 1000, 1),
                    "at_s": round(last_seen - self.t0, 3), "gap_ms": round((end - last_seen) * 1000, 1),
                    "main_samples": sum(main.values()),
                    "main": [{"n": n, "stack": list(s)} for s, n in main.most_common(3)],
                    "other_threads": [{"thread": t, "n": n, "stack": list(s)} for (t, s), n in others.most_common(2)],
                })
                main, others, in_stall = collections.Counter(), collections.Counter(), False
            if not in_stall and now - history[-1][0] > 0.02:  # threads' CPU use: a stall's counted from before it
                history.append((time.perf_counter(), _threads()))
            time.sleep(self._sample)

    def gaps(self, since_s: float = 0.0, until_s: float = float("inf")) -> dict:
        """Heartbeat gaps (ms) that end between `since_s` and `until_s` (seconds after start()): count, max, p99."""
        import numpy as np

        ticks = np.asarray(self.ticks) - self.t0
        gaps = np.diff(ticks) * 1000
        ends = ticks[1:]
        gaps = gaps[(ends > since_s) & (ends <= until_s)]
        if not len(gaps):
            return {"ticks": 0}
        return {"ticks": int(len(gaps)), "max_stall_ms": round(float(gaps.max()), 1),
                "p99_ms": round(float(np.percentile(gaps, 99)), 1), "stalls_over_100ms": int((gaps > 100).sum())}

    def summary(self) -> dict:
        return {**self.gaps(), "stalls": self.stalls, "collections": self.collections, "marks": self.marks}
