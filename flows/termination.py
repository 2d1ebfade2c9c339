"""SIGTERM (a scheduler's pre-emption, `kill`, `docker stop`) as an orderly stop of a run or a sweep.

Python's default for SIGTERM ends the process at once: no `finally`, no atexit, so the MLflow runs the
pipeline and a sweep opened would stay RUNNING in the dashboard for ever. `exit_on_sigterm` (the CLI's
entry point installs it) turns the signal into `SystemExit(143)`, 128 + 15 as a shell reports a SIGTERM,
so the pipeline marks its run FAILED and a sweep closes its parent as KILLED.

A handler's exception lands wherever the main thread happens to be, and some places drop it: Python
ignores an exception raised inside a finaliser (`__del__`, a weakref callback), and some library code
catches BaseException. Inside a flow run, Prefect's own handler is in charge (it raises its
TerminationSignal, marks the flow run Crashed and passes the signal on to ours). So the pipeline runs
under `noting_sigterm`, which records the signal before Prefect's handler sees it, and
`stop_if_terminated` raises the stop again where we decide: after each step's artifact is complete
(flows/tasks.py), before the pipeline marks its run FINISHED, and before each sweep job or compare arm.
A dropped stop therefore still ends the run FAILED and starts no further job.

Not covered: a signal that lands in Prefect's engine after the flow's own code has returned. Prefect
ignores it there by design, the run is rightly FINISHED, and a sweep goes on with its next job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STATUS = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

_received = threading.Event()  # set by the first SIGTERM, never cleared in this process
_stopping = threading.Event()  # a SystemExit for it has been raised: the process is cleaning up


def terminated() -> bool:
    """Whether this process has received SIGTERM."""
    return _received.is_set()


def stop_if_terminated() -> None:
    """Raise `SystemExit(143)` if SIGTERM arrived, even where the exception its handler raised was dropped."""
    if _received.is_set():
        _stopping.set()
        raise SystemExit(STATUS)


def _exit(signum: int, frame: object) -> None:
    if _stopping.is_set():  # a second SIGTERM while we clean up: end the process as SIGTERM does
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    _received.set()
    stop_if_terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit(143) in the main thread; only where nobody else handles it (the
    default action is installed), so an embedding program's own handler is left alone."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit)


@contextlib.contextmanager
def noting_sigterm() -> Iterator[None]:
    """Record a SIGTERM for `stop_if_terminated`, then hand it to the handler installed before (inside
    a flow run, Prefect's). Restores that handler on the way out."""
    previous = signal.getsignal(signal.SIGTERM) if _in_main_thread() else None
    if not callable(previous):  # not the main thread, the default action or ignored: nothing to pass on
        yield
        return

    def note(signum: int, frame: object) -> None:
        _received.set()
        previous(signum, frame)

    signal.signal(signal.SIGTERM, note)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is note:
            signal.signal(signal.SIGTERM, previous)
