"""Progress reports yielded by the long-running core generators (features, segmentation, fine-tuning).

Long operations are generators: they yield a :class:`Progress` after each unit of work and
`return` their result. A UI runs them in a worker, shows each report and cancels by no longer
iterating; a script drains them with :func:`run`.
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


def run(job: Generator[Progress, None, T], report: Callable[[Progress], None] | None = None) -> T:
    """Drive a core generator to the end and return its result, passing each report to `report`."""
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            return stop.value
        if report is not None:
            report(progress)
