"""Progress reports yielded by the long-running core generators (features, segmentation, fine-tuning).

Long operations are generators: they yield a :class:`Progress` after each unit of work and
`return` their result. A UI runs them in a worker, shows each report and cancels by no longer
iterating; a script drains them with :func:`run`. A step that can run for seconds (LiteMedSAM's refinement of a
few slices) also takes a ``stop`` callable, checked inside the step (:func:`check_stop`): when it says stop, the
step raises :class:`Stopped` at once instead of finishing (nothing half-done is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    message: str = ""
    loss: float | None = None  # set by fine-tuning steps


class Stopped(Exception):
    """Raised inside a long step whose caller asked it to stop (its ``stop`` callable returned True)."""


Stop = Callable[[], bool]  # a caller's "stop now?" (e.g. threading.Event.is_set); None: never


def check_stop(stop: Stop | None) -> None:
    """Raise :class:`Stopped` when `stop` (None: never) says stop."""
    if stop is not None and stop():
        raise Stopped()


def run(job: Generator[Progress, None, T], report: Callable[[Progress], None] | None = None) -> T:
    """Drive a core generator to the end and return its result, passing each report to `report`."""
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            return stop.value
        if report is not None:
            report(progress)
