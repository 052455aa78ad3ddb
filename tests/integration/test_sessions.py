"""Engine connections kept per worker process (tasks/engines/pool.py), through real workers.

How reuse is seen without a hook in the worker: ``txid_current()`` is DuckDB's
transaction counter, kept by the database instance (the pooled connection), not by
the per-statement cursor. On a worker process that keeps its connection it climbs from
one task to the next; on a new connection it starts over at the same first value
(``TURBO_SESSION_MAX_IDLE=0``, a connection per query, shows it). One slot (``-c 1``)
puts every task of a test on the same process.
"""
from __future__ import annotations

import os
import time

import duckdb
import pytest

from support.helpers import unique_queue
from tasks.errors import QueryError, TaskTimeout
from tasks.query import run_query

WAIT = 60
ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"


def one_slot(start_worker, concurrency: int = 1, **env):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=concurrency, env=env)
    worker.queue = queue
    return worker


def query(worker, sql: str, **options) -> dict:
    return run_query.delay(sql, queue=worker.queue, **options).get(timeout=WAIT)


def txid(worker) -> int:
    return query(worker, "SELECT txid_current() AS t")["rows"][0][0]


def test_queries_on_one_process_share_one_connection(start_worker):
    kept = one_slot(start_worker)
    seen = [txid(kept) for _ in range(12)]
    assert seen == sorted(set(seen)), seen  # one database instance, counting up
    fresh = one_slot(start_worker, TURBO_SESSION_MAX_IDLE="0")
    assert len({txid(fresh) for _ in range(4)}) == 1  # a new connection every time...
    assert txid(fresh) == seen[0]  # ...which starts where the kept one started


def test_a_timeout_discards_the_connection_and_the_next_query_works(start_worker):
    worker = one_slot(start_worker)
    first, second = txid(worker), txid(worker)
    assert second > first
    with pytest.raises(TaskTimeout):
        query(worker, ENDLESS, timeout=1)
    assert txid(worker) == first  # a new connection after the interrupt
    assert query(worker, "SELECT 7")["rows"] == [[7]]


def test_a_revoked_statement_discards_the_connection(start_worker):
    worker = one_slot(start_worker)
    first = txid(worker)
    assert txid(worker) > first
    slow = run_query.delay(ENDLESS, timeout=600, queue=worker.queue)
    deadline = time.monotonic() + 30
    while slow.state != "STARTED":
        assert time.monotonic() < deadline, slow.state
        time.sleep(0.05)
    time.sleep(0.5)
    slow.revoke(terminate=True, signal="SIGUSR1")
    assert txid(worker) == first  # a new connection after the cancel


def test_a_sql_error_does_not_poison_the_next_query(start_worker):
    worker = one_slot(start_worker)
    before = txid(worker)
    for bad, needle in (("SELEC 1", "syntax error"), ("SELECT * FROM missing_table", "missing"),
                        ("SELECT 'x'::INT", "Conversion")):
        with pytest.raises(QueryError, match=needle):
            query(worker, bad)
    assert query(worker, "SELECT count(*) FROM orders")["rows"] == [[5000]]
    assert txid(worker) > before  # the same connection, still good


def test_duckdb_threads_setting_reaches_the_connection(start_worker):
    worker = one_slot(start_worker, TURBO_DUCKDB_THREADS="3")
    assert query(worker, "SELECT current_setting('threads') AS t")["rows"] == [[3]]


def test_duckdb_threads_default_to_the_cpus_per_pool_process(start_worker):
    worker = one_slot(start_worker, concurrency=2)
    cpus = len(os.sched_getaffinity(0))
    for _ in range(4):
        assert query(worker, "SELECT current_setting('threads')")["rows"] == [[max(1, cpus // 2)]]


def test_state_does_not_leak_from_one_task_to_the_next(start_worker):
    """What a statement creates stays with it: its cursor's (temp tables, variables,
    session settings) goes with the cursor; a statement that changes the database
    instance (a table in the in-memory database, ATTACH, a global setting) closes the
    connection after it."""
    worker = one_slot(start_worker, TURBO_DUCKDB_PATH=":memory:", TURBO_DUCKDB_THREADS="1")
    for setup, probe in (
        ("CREATE TEMP TABLE mine AS SELECT 1 AS a", "SELECT * FROM mine"),
        ("CREATE TABLE shared AS SELECT 1 AS a", "SELECT * FROM shared"),
        ("CREATE MACRO twice(x) AS 2 * x", "SELECT twice(2)"),
        ("ATTACH ':memory:' AS other", "SELECT count(*) FROM other.information_schema.tables"),
    ):
        query(worker, setup)
        with pytest.raises(QueryError):
            query(worker, probe)
    query(worker, "SET VARIABLE secret = 42")
    assert query(worker, "SELECT getvariable('secret')")["rows"] == [[None]]
    query(worker, "SET threads = 2")
    assert query(worker, "SELECT current_setting('threads')")["rows"] == [[1]]


def test_a_replaced_database_file_is_reopened(start_worker, base_dir):
    path = base_dir / f"replaced-{unique_queue()}.duckdb"

    def build(version: int, target) -> None:
        with duckdb.connect(str(target)) as con:
            con.execute(f"CREATE TABLE v AS SELECT {version} AS version")

    build(1, path)
    worker = one_slot(start_worker, TURBO_DUCKDB_PATH=str(path))
    assert query(worker, "SELECT version FROM v")["rows"] == [[1]]
    build(2, path.with_suffix(".next"))
    os.replace(path.with_suffix(".next"), path)  # a rebuilt file published by rename
    assert query(worker, "SELECT version FROM v")["rows"] == [[2]]
