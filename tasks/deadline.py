"""Run blocking work in a thread while the caller's thread keeps signals.

Python runs signal handlers only in the main thread, between bytecodes; a
statement blocked in C code (DuckDB, the Databricks connector) would delay
Celery's soft time limit and ``revoke(terminate=True)`` until it returned.
Here the main thread only waits, so a deadline or a signal arrives at once
and ``cancel`` stops the work at the source.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from .errors import TaskTimeout

T = TypeVar("T")

CANCEL_GRACE_S = 10.0


def run_with_deadline(work: Callable[[], T], cancel: Callable[[], None], timeout: float,
                      what: str = "work") -> T:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"turbo-{what}", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        thread.join(timeout)
        timed_out = thread.is_alive()
        if timed_out:
            _cancel_and_wait(thread, cancel)
    except BaseException:  # soft time limit, revoke, KeyboardInterrupt
        _cancel_and_wait(thread, cancel)
        raise
    if timed_out:
        raise TaskTimeout(
            f"{what} exceeded its timeout of {timeout:g}s and was cancelled "
            f"after {time.monotonic() - started:.1f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _cancel_and_wait(thread: threading.Thread, cancel: Callable[[], None]) -> None:
    try:
        cancel()
    finally:
        thread.join(CANCEL_GRACE_S)
