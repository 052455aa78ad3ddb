"""Run blocking work in a thread while the caller's thread keeps signals and a stop event.

Python runs signal handlers only in the main thread, between bytecodes; a
statement blocked in C code (DuckDB, the Databricks connector) would delay
Celery's soft time limit and ``revoke(terminate=True)`` until it returned.
Here the caller's thread only waits, so a deadline or a signal arrives at once
and ``cancel`` stops the work at the source.

On a threads pool there are no signals for a task: the worker sets the task's
stop event instead (``celeryapp.worker.running``), and the wait below watches it
(``stop=``; by default the event the worker registered for the calling thread's
task, see :func:`set_stop_source`). A stop cancels the work the same way and
raises :class:`Cancelled`, which the task turns into a kept ``REVOKED`` state.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from .errors import TaskTimeout

T = TypeVar("T")

CANCEL_GRACE_S = 10.0
STOP_POLL_S = 0.1  # how often the wait looks at the stop event (the work's end is seen at once)


class StopEvent(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Cancelled(Exception):
    """The work was stopped on request (revoke, cancel_task, a workflow's cancel) and
    cancelled at the source. Not a failure: the task keeps the REVOKED state the
    worker stored when it was revoked."""


_stop_source: Callable[[], StopEvent | None] | None = None


def set_stop_source(source: Callable[[], StopEvent | None] | None) -> None:
    """Where :func:`current_stop` finds the stop event of the calling thread's task
    (the worker side registers ``celeryapp.worker.running.stop_event``)."""
    global _stop_source
    _stop_source = source


def current_stop() -> StopEvent | None:
    """The stop event of the task this thread runs, if the worker registered one."""
    return _stop_source() if _stop_source is not None else None


def run_with_deadline(work: Callable[[], T], cancel: Callable[[], None], timeout: float,
                      what: str = "work", stop: StopEvent | None = None) -> T:
    """``work()`` in a thread; ``cancel()`` it when ``timeout`` passes (TaskTimeout),
    when ``stop`` is set (Cancelled) or when a signal interrupts the wait.

    ``stop`` defaults to :func:`current_stop` (the calling thread's task)."""
    if stop is None:
        stop = current_stop()
    if stop is not None and stop.is_set():
        raise Cancelled(f"{what} stopped before it started")
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"turbo-{what}", daemon=True)
    started = time.monotonic()
    thread.start()
    stopped = False
    try:
        if stop is None:
            thread.join(timeout)
        else:
            deadline = started + timeout
            while thread.is_alive() and not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                thread.join(min(remaining, STOP_POLL_S))
        cut_short = thread.is_alive()  # else it ended on its own: its outcome stands
        if cut_short:
            stopped = stop is not None and stop.is_set()
            _cancel_and_wait(thread, cancel)
    except BaseException:  # soft time limit, revoke, KeyboardInterrupt
        _cancel_and_wait(thread, cancel)
        raise
    elapsed = time.monotonic() - started
    if stopped:
        raise Cancelled(f"{what} stopped on request and cancelled after {elapsed:.1f}s")
    if cut_short:
        raise TaskTimeout(
            f"{what} exceeded its timeout of {timeout:g}s and was cancelled "
            f"after {elapsed:.1f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _cancel_and_wait(thread: threading.Thread, cancel: Callable[[], None]) -> None:
    try:
        cancel()
    finally:
        thread.join(CANCEL_GRACE_S)
