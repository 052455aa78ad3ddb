"""Timeouts, revokes, transient retries and refused pickle: each on its own worker."""
from __future__ import annotations

import time
import uuid

import duckdb
import pytest
from celery.result import AsyncResult

from tasks.errors import EngineUnavailable, TaskTimeout
from tasks.query import run_query

# 10^12 rows: runs until cancelled (no sleep: real work at the engine)
ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
WAIT = 60


def unique_queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def wait_for_state(async_result: AsyncResult, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while async_result.state != state:
        assert time.monotonic() < deadline, f"still {async_result.state}, wanted {state}"
        time.sleep(0.05)


def test_timeout_cancels_the_statement_and_frees_the_slot(start_worker):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=1)
    started = time.monotonic()
    slow = run_query.delay(ENDLESS, timeout=1, queue=queue)
    quick = run_query.delay("SELECT 7", queue=queue)
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 1s and was cancelled"):
        slow.get(timeout=WAIT)
    # one slot: the next task runs only because the statement really stopped
    assert quick.get(timeout=WAIT)["rows"] == [[7]]
    assert time.monotonic() - started < 20


def test_revoke_terminate_cancels_a_running_statement(start_worker):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1)
    slow = run_query.delay(ENDLESS, timeout=600, queue=queue)
    wait_for_state(slow, "STARTED")
    time.sleep(0.5)  # let the statement get going inside DuckDB
    revoked_at = time.monotonic()
    slow.revoke(terminate=True, signal="SIGUSR1")
    quick = run_query.delay("SELECT 8", queue=queue)
    assert quick.get(timeout=WAIT)["rows"] == [[8]]
    # the hard limit would be ~606 s away: the slot came back because of the cancel
    assert time.monotonic() - revoked_at < 20
    wait_for_state(slow, "REVOKED")
    assert f"{slow.id}] revoked after" in worker.log()


def test_transient_lock_error_is_retried_then_succeeds(start_worker, base_dir):
    queue = unique_queue()
    path = base_dir / f"locked-{queue}.duckdb"
    holder = duckdb.connect(str(path))  # this process holds the write lock
    holder.execute("CREATE TABLE t AS SELECT 42 AS answer")
    holder.execute("CHECKPOINT")
    worker = start_worker(queues=queue, concurrency=1, env={
        "TURBO_DUCKDB_PATH": str(path), "TURBO_RETRY_BACKOFF": "0.5",
        "TURBO_RETRY_BACKOFF_MAX": "1"})
    async_result = run_query.delay("SELECT answer FROM t", retries=20, queue=queue)
    deadline = time.monotonic() + WAIT
    while f"{async_result.id}] transient error, retry 2/" not in worker.log():
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.1)
    holder.close()  # the lock goes away: the next attempt succeeds
    result = async_result.get(timeout=WAIT)
    assert result["rows"] == [[42]]
    assert result["attempts"] >= 3


def test_transient_error_past_the_budget_fails_with_the_engine_message(start_worker, base_dir,
                                                                     celery_app):
    queue = unique_queue()
    path = base_dir / f"locked-{queue}.duckdb"
    holder = duckdb.connect(str(path))
    start_worker(queues=queue, concurrency=1, env={"TURBO_DUCKDB_PATH": str(path)})
    try:
        async_result = run_query.delay("SELECT 1", retries=2, queue=queue)
        with pytest.raises(EngineUnavailable, match="Could not set lock") as raised:
            async_result.get(timeout=WAIT)
        assert celery_app.backend.get_task_meta(async_result.id)["retries"] == 2
        assert "(gave up after 3 attempts in " in str(raised.value)
        assert str(raised.value).endswith(": 2 retries spent)")
        assert raised.value.details["attempts"] == 3
        assert raised.value.details["gave_up"] == "2 retries spent"
    finally:
        holder.close()


def test_retries_that_would_outlast_the_timeout_are_not_made(start_worker, base_dir,
                                                             celery_app):
    """``timeout`` covers the whole call: a lock that stays ends the call within it (plus
    slack), not after 50 retries; the error says why it gave up."""
    queue = unique_queue()
    path = base_dir / f"locked-{queue}.duckdb"
    holder = duckdb.connect(str(path))
    start_worker(queues=queue, concurrency=1, env={
        "TURBO_DUCKDB_PATH": str(path), "TURBO_RETRY_BACKOFF": "0.5",
        "TURBO_RETRY_BACKOFF_MAX": "1"})
    try:
        started = time.monotonic()
        async_result = run_query.delay("SELECT 1", retries=50, timeout=3, queue=queue)
        with pytest.raises(EngineUnavailable, match="Could not set lock") as raised:
            async_result.get(timeout=WAIT)
        assert time.monotonic() - started < 3 + 15
        attempts = raised.value.details["attempts"]
        assert 2 <= attempts < 51
        assert celery_app.backend.get_task_meta(async_result.id)["retries"] == attempts - 1
        assert str(raised.value).endswith(
            ": another attempt would not fit in the timeout of 3s)")
        assert f"(gave up after {attempts} attempts in " in str(raised.value)
    finally:
        holder.close()


def test_pickled_message_is_refused_not_executed(start_worker, base_dir, celery_app):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1)
    marker = base_dir / f"pickle-ran-{queue}.csv"
    pickled = celery_app.send_task(
        "turbo.query", args=[f"COPY (SELECT 1) TO '{marker}'"], queue=queue,
        serializer="pickle")
    after = run_query.delay("SELECT 1", queue=queue)
    assert after.get(timeout=WAIT)["rows"] == [[1]]  # the worker lives on
    time.sleep(0.5)
    assert not marker.exists(), "a pickled message was executed"
    assert pickled.state == "PENDING"
    log = worker.log()
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log, log[-2000:]
