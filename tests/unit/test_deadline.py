"""tasks.deadline's work threads: kept for the next call, never handed a second job while
one runs (work that outlived its cancellation), and not inherited by a forked child."""
from __future__ import annotations

import os
import threading

import pytest

from tasks import deadline
from tasks.deadline import run_with_deadline
from tasks.errors import TaskTimeout


def _work_threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("turbo-")}


def test_calls_one_after_another_share_one_thread():
    run_with_deadline(lambda: 0, lambda: None, 5, "warm-up")
    before = _work_threads()
    seen = {run_with_deadline(threading.get_ident, lambda: None, 5, "w") for _ in range(50)}
    assert len(seen) == 1 and seen <= before | _work_threads()
    assert _work_threads() == before  # no thread more


def test_errors_and_values_come_back_to_the_caller():
    with pytest.raises(ZeroDivisionError):
        run_with_deadline(lambda: 1 / 0, lambda: None, 5, "w")
    assert run_with_deadline(lambda: "ok", lambda: None, 5, "w") == "ok"


def test_work_that_outlives_its_cancel_is_not_given_the_next_call(monkeypatch):
    monkeypatch.setattr(deadline, "CANCEL_GRACE_S", 0.2)
    release = threading.Event()
    stuck: dict = {}

    def stubborn():  # ignores its cancel, as blocking C code may
        stuck["ident"] = threading.get_ident()
        release.wait(30)

    with pytest.raises(TaskTimeout, match="exceeded its timeout"):
        run_with_deadline(stubborn, lambda: None, 0.2, "stubborn")
    try:
        assert run_with_deadline(threading.get_ident, lambda: None, 5, "next") != stuck["ident"]
    finally:
        release.set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (prefork pool children)")
def test_a_forked_child_starts_its_own_threads():
    run_with_deadline(lambda: 0, lambda: None, 5, "parent")  # an idle thread in the parent
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread does not exist here
        ok = False
        try:
            ok = run_with_deadline(lambda: 42, lambda: None, 5, "child") == 42
        finally:
            os._exit(0 if ok else 1)  # noqa: B012 - the child never returns into pytest
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
