"""How a batch stops on Ctrl-C (SIGINT) and SIGTERM: the same way, with its workers closed.

    with stop_signals():            # SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread
        ...
        with uninterrupted():       # starting or closing the workers: neither signal breaks in
            cluster = LocalCluster(...)

Both raise in the main thread where the batch waits for its tasks, so the same clean-up runs for both:
the tasks are cancelled, the workers closed, and the rows of unfinished scans stay "pending". The CLI
exits with 130 after Ctrl-C and 143 after SIGTERM: 128 + the signal's number, what a shell reports for a
job ended by that signal, so a job scheduler that sent SIGTERM sees a stopped batch, not a finished one.
Signal handlers can only be set in the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """The batch got SIGTERM; handled wherever Ctrl-C is (it is a KeyboardInterrupt)."""

    exit_status = 128 + signal.SIGTERM


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(previous):
    """A handler signal.signal takes back (None: one set outside Python, put back as the default)."""
    return signal.SIG_DFL if previous is None else previous


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def stop_signals():
    """Inside, SIGTERM raises :class:`Terminated` in the main thread (Ctrl-C already raises
    KeyboardInterrupt); the previous handler is back after."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _handler(previous))


@contextlib.contextmanager
def uninterrupted():
    """Inside, SIGINT is ignored and SIGTERM held until the end (then delivered).

    Worker processes started inside inherit the ignored SIGINT: Ctrl-C in a terminal goes to the whole
    process group, and the batch, not each worker with its own traceback, decides what happens (it
    closes them). SIGTERM is not ignored but held in this process only (a worker must still end on the
    SIGTERM its nanny sends when closing it). Closing the workers runs inside too, so a second signal
    cannot leave them behind.
    """
    if not _in_main_thread():
        yield
        return
    held: list[int] = []
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _handler(previous_int))
        signal.signal(signal.SIGTERM, _handler(previous_term))
    if held:
        signal.raise_signal(signal.SIGTERM)  # to the handler outside (stop_signals: Terminated)


__all__ = ["Terminated", "stop_signals", "uninterrupted"]
