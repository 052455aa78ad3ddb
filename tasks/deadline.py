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

The threads that run the work are kept for the next call (:class:`_WorkThread`): a new
thread per call cost a small query about as much again as the query itself (its start,
its join and the hand-overs between two cores). A thread whose work outlives its
cancellation is simply not reused until that work returns; a forked child (prefork)
starts with none of its parent's.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from .errors import TaskTimeout

T = TypeVar("T")

CANCEL_GRACE_S = 10.0
STOP_POLL_S = 0.1  # how often the wait looks at the stop event (the work's end is seen at once)
IDLE_KEEP = 64  # idle work threads kept per process (a threads pool runs many at once)


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
    job = _Job(work)
    started = time.monotonic()
    _WorkThread.run(job, what)
    stopped = False
    try:
        if stop is None:
            job.wait(timeout)
        else:
            deadline = started + timeout
            while not job.wait(0) and not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                job.wait(min(remaining, STOP_POLL_S))
        cut_short = not job.wait(0)  # else it ended on its own: its outcome stands
        if cut_short:
            stopped = stop is not None and stop.is_set()
            _cancel_and_wait(job, cancel)
    except BaseException:  # soft time limit, revoke, KeyboardInterrupt
        _cancel_and_wait(job, cancel)
        raise
    elapsed = time.monotonic() - started
    if stopped:
        raise Cancelled(f"{what} stopped on request and cancelled after {elapsed:.1f}s")
    if cut_short:
        raise TaskTimeout(
            f"{what} exceeded its timeout of {timeout:g}s and was cancelled "
            f"after {elapsed:.1f}s")
    return job.outcome()


def _cancel_and_wait(job: _Job, cancel: Callable[[], None]) -> None:
    try:
        cancel()
    finally:
        job.wait(CANCEL_GRACE_S)


class _Job:
    """One call's work and what came of it. The hand-overs between the two threads are
    bare locks used as one-shot signals: the cheapest wake-up CPython has (an Event's
    condition costs a small query a tenth of its time again)."""

    __slots__ = ("work", "value", "error", "finished", "_done")

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.value = self.error = None
        self.finished = False
        self._done = threading.Lock()
        self._done.acquire()  # released by the work thread when the work has returned

    def run(self) -> None:
        try:
            self.value = self.work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            self.error = exc
        finally:
            self.work = None
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """Whether the work has returned, waiting up to ``timeout`` seconds for it (a
        signal interrupts the wait, as it would an Event's)."""
        if not self.finished and self._done.acquire(timeout=max(0.0, timeout)):
            self.finished = True
        return self.finished

    def outcome(self):
        if self.error is not None:
            error, self.error = self.error, None  # no cycle through the traceback
            raise error
        return self.value


class _WorkThread:
    """A daemon thread that runs one job after another; idle ones wait in :attr:`idle`."""

    idle: list[_WorkThread] = []
    lock = threading.Lock()

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # released when a job is handed over
        self.thread = threading.Thread(target=self._serve, name="turbo-work", daemon=True)

    @classmethod
    def run(cls, job: _Job, what: str) -> None:
        """Hand ``job`` to an idle thread of this process, or to a new one."""
        with cls.lock:
            worker = cls.idle.pop() if cls.idle else None
        fresh = worker is None
        if fresh:
            worker = cls()
        worker.thread.name = f"turbo-{what}"
        worker.job = job
        worker.wake.release()
        if fresh:
            worker.thread.start()

    def _serve(self) -> None:
        while True:
            self.wake.acquire()
            job, self.job = self.job, None
            job.run()
            with _WorkThread.lock:
                if len(_WorkThread.idle) >= IDLE_KEEP:
                    return
                _WorkThread.idle.append(self)


def _forget_idle_after_fork() -> None:
    _WorkThread.idle = []  # the parent's threads do not exist in the child
    _WorkThread.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_idle_after_fork)
