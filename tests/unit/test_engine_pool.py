"""The per-process connection pool (tasks/engines/pool.py) and the runner's use of it with
DuckDB (tasks/sql.py): no Redis, no worker."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from tasks import sql as runner
from tasks.engines import duckdb_threads, get_engine
from tasks.engines.databricks import DatabricksEngine, DatabricksSession
from tasks.engines.duckdb import DuckDBEngine
from tasks.engines.pool import Policy, SessionPool
from tasks.errors import QueryError, TaskTimeout

ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Things:
    """Stand-in connections: numbered, closed ones remembered."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[int] = []

    def open(self) -> int:
        self.opened.append(len(self.opened) + 1)
        return self.opened[-1]

    def close(self, item: int) -> None:
        self.closed.append(item)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pool(clock):
    return SessionPool(clock=clock)


@pytest.fixture
def things():
    return Things()


def take(pool, things, key="k", policy=Policy(), check=None):
    return pool.acquire(key, things.open, close=things.close, policy=policy, check=check)


# --- the pool ---------------------------------------------------------------------------
def test_a_released_connection_is_reused(pool, things):
    first = take(pool, things)
    first.release()
    second = take(pool, things)
    assert second.item == first.item == 1 and second.reused and not first.reused
    second.release()
    stats = pool.stats()
    assert (stats["opened"], stats["reused"], stats["in_use"]) == (1, 1, 0)
    assert things.closed == []


def test_keys_do_not_share(pool, things):
    take(pool, things, "a").release()
    assert take(pool, things, "b").item == 2


def test_idle_expiry(pool, things, clock):
    policy = Policy(max_idle=10, max_age=0)
    take(pool, things, policy=policy).release()
    clock.now += 9
    lease = take(pool, things, policy=policy)
    assert lease.item == 1
    lease.release()
    clock.now += 11
    assert take(pool, things, policy=policy).item == 2
    assert things.closed == [1]
    assert pool.stats()["expired"] == 1


def test_expired_connections_of_other_keys_are_closed_on_the_next_use(pool, things, clock):
    policy = Policy(max_idle=10)
    take(pool, things, "a", policy).release()
    clock.now += 60
    take(pool, things, "b", policy).release()
    assert things.closed == [1]
    assert pool.stats()["idle"] == {"'b'": 1}


def test_max_age_holds_however_busy(pool, things, clock):
    policy = Policy(max_idle=100, max_age=30)
    for _ in range(3):  # used every 10 s: never idle long
        lease = take(pool, things, policy=policy)
        assert lease.item == 1
        lease.release()
        clock.now += 10
    clock.now += 5  # 35 s old
    assert take(pool, things, policy=policy).item == 2
    assert things.closed == [1]


def test_an_old_connection_is_closed_when_it_comes_back(pool, things, clock):
    policy = Policy(max_idle=100, max_age=30)
    lease = take(pool, things, policy=policy)
    clock.now += 31  # a long statement
    lease.release()
    assert things.closed == [1] and pool.stats()["idle"] == {}


def test_max_uses(pool, things):
    policy = Policy(max_uses=2)
    items = []
    for _ in range(5):
        lease = take(pool, things, policy=policy)
        items.append(lease.item)
        lease.release()
    assert items == [1, 1, 2, 2, 3]
    assert things.closed == [1, 2]


def test_max_size_caps_what_is_kept_not_what_is_open(pool, things):
    policy = Policy(max_size=2)
    leases = [take(pool, things, policy=policy) for _ in range(3)]
    assert [lease.item for lease in leases] == [1, 2, 3]  # nobody waits
    assert pool.stats()["in_use"] == 3
    for lease in leases:
        lease.release()
    assert things.closed == [3]
    assert pool.stats()["idle"] == {"'k'": 2}
    # the most recently used comes first (the warmest cache)
    assert take(pool, things, policy=policy).item == 2


def test_discard_closes_and_never_hands_out_again(pool, things):
    lease = take(pool, things)
    lease.discard()
    lease.release()  # a second hand-back is ignored
    assert things.closed == [1]
    assert take(pool, things).item == 2
    assert pool.stats()["discarded"] == 1


def test_nothing_is_kept_with_max_idle_zero(pool, things):
    policy = Policy(max_idle=0)
    take(pool, things, policy=policy).release()
    take(pool, things, policy=policy).release()
    assert things.opened == [1, 2] and things.closed == [1, 2]


def test_health_check_before_reuse(pool, things):
    take(pool, things).release()
    seen = []

    def check(item):
        seen.append(item)
        return item != 1

    assert take(pool, things, check=check).item == 2
    assert seen == [1] and things.closed == [1]
    assert pool.stats()["failed_checks"] == 1


def test_a_check_that_raises_counts_as_failed(pool, things):
    take(pool, things).release()

    def check(item):
        raise RuntimeError("boom")

    assert take(pool, things, check=check).item == 2
    assert things.closed == [1]


def test_a_changed_policy_does_not_reuse_the_old_ones(pool, things):
    take(pool, things, policy=Policy(max_idle=600)).release()
    assert take(pool, things, policy=Policy(max_idle=60)).item == 2
    assert things.closed == [1]


def test_connect_errors_propagate_and_leave_nothing_behind(pool):
    def fail():
        raise ConnectionError("no")

    with pytest.raises(ConnectionError):
        pool.acquire("k", fail, close=lambda item: None)
    assert pool.stats()["in_use"] == 0 and pool.stats()["opened"] == 0


def test_close_errors_are_logged_not_raised(pool, caplog):
    def close(item):
        raise OSError("already gone")

    pool.acquire("k", lambda: 1, close=close).discard()
    assert "closing a pooled" in caplog.text


def test_threads_never_share_a_connection(pool):
    things = Things()
    lock = threading.Lock()
    holders: dict[int, int] = {}
    clashes = []

    def worker():
        for _ in range(300):
            lease = pool.acquire("k", lambda: _open(), close=things.close, policy=Policy())
            with lock:
                if lease.item in holders:
                    clashes.append(lease.item)
                holders[lease.item] = threading.get_ident()
            time.sleep(0)
            with lock:
                del holders[lease.item]
            lease.release()

    def _open():
        with lock:
            return things.open()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == []
    assert len(things.opened) <= 6
    stats = pool.stats()
    assert stats["in_use"] == 0
    assert stats["opened"] + stats["reused"] == 1800


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_uses_or_closes_what_the_parent_opened(pool, things):
    take(pool, things).release()
    held = take(pool, things)  # in use in the parent at fork time
    assert held.item == 1
    take(pool, things).release()  # item 2 idle
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            before = pool.stats()
            lease = take(pool, things)
            fresh = lease.item
            lease.release()
            held.release()  # a parent's lease: neither kept nor closed here
            after = pool.stats()
            ok = (before["idle"] == {} and before["in_use"] == 0 and before["forks"] == 1
                  and fresh == 3 and things.closed == [] and after["idle"] == {"'k'": 1})
            os.write(write, repr((ok, before, fresh, things.closed, after)).encode())
            code = 0 if ok else 1
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 10_000).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, report
    # the parent's pool is untouched
    assert pool.stats()["idle"] == {"'k'": 1} and pool.stats()["in_use"] == 1
    held.release()
    assert things.closed == []


# --- DuckDB through the runner ------------------------------------------------------------
def run(engine, sql, pool, params=None, timeout=30.0, tmp=Path("/tmp")):
    return runner.execute(engine, sql, params, timeout=timeout, max_inline_rows=1000,
                          preview_rows=5, spill_path=tmp / "unused.parquet", pool=pool)


def txid(engine, pool) -> int:
    """DuckDB's transaction counter: it belongs to the database instance, so it climbs
    across statements on one connection and starts over on a new one."""
    return run(engine, "SELECT txid_current()", pool)["rows"][0][0]


@pytest.fixture
def memory():
    return DuckDBEngine(":memory:", threads=1)


def test_duckdb_statements_share_one_connection(memory):
    pool = SessionPool()
    ids = [txid(memory, pool) for _ in range(5)]
    assert ids == sorted(set(ids)) and ids[0] == 2  # one instance, counting up
    assert pool.stats()["opened"] == 1 and pool.stats()["reused"] == 4


def test_a_plain_sql_error_keeps_the_connection(memory):
    pool = SessionPool()
    first = txid(memory, pool)
    for bad in ("SELEC 1", "SELECT * FROM missing_table", "SELECT $x", "SELECT 'a'::INT",
                "SELECT 1 / 0::INT, [1][5], 1 + NULL; SELECT * FROM nope"):
        with pytest.raises(QueryError):
            run(memory, bad, pool)
    assert txid(memory, pool) > first
    assert pool.stats()["opened"] == 1 and pool.stats()["discarded"] == 0


def test_an_error_in_the_middle_of_the_stream_discards(memory):
    pool = SessionPool()
    txid(memory, pool)
    with pytest.raises(QueryError):
        run(memory, "SELECT CASE WHEN i < 900000 THEN i::VARCHAR ELSE 'x' END::INT AS v "
                    "FROM range(1000000) t(i)", pool)
    assert pool.stats()["discarded"] == 1
    assert txid(memory, pool) == 2


def test_a_timeout_discards_the_connection_and_the_next_statement_works(memory):
    pool = SessionPool()
    assert txid(memory, pool) == 2
    started = time.monotonic()
    with pytest.raises(TaskTimeout):
        run(memory, ENDLESS, pool, timeout=0.5)
    assert time.monotonic() - started < 10
    assert pool.stats()["discarded"] == 1
    assert txid(memory, pool) == 2  # a new instance
    assert pool.stats()["opened"] == 2


def test_session_state_stays_with_its_statement(memory):
    pool = SessionPool()
    run(memory, "CREATE TEMP TABLE mine AS SELECT 1 AS a", pool)
    run(memory, "SET VARIABLE secret = 42", pool)
    run(memory, "SET TimeZone = 'Asia/Tokyo'", pool)
    with pytest.raises(QueryError, match="mine"):
        run(memory, "SELECT * FROM mine", pool)
    assert run(memory, "SELECT getvariable('secret') AS v", pool)["rows"] == [[None]]
    assert run(memory, "SELECT current_setting('TimeZone')", pool)["rows"] != [["Asia/Tokyo"]]


def test_statements_that_change_the_instance_close_the_connection(memory):
    """Tables of an in-memory database, ATTACH and global settings live in the instance,
    not in the cursor: after such a statement the connection is not kept."""
    pool = SessionPool()
    for change, probe in [
        ("CREATE TABLE shared AS SELECT 1 AS a", "SELECT count(*) FROM shared"),
        ("ATTACH ':memory:' AS other", "SELECT count(*) FROM other.information_schema.tables"),
        ("CREATE TABLE t AS SELECT 1 AS a; SELECT * FROM t", "SELECT count(*) FROM t"),
    ]:
        run(memory, change, pool)
        with pytest.raises(QueryError):
            run(memory, probe, pool)
    run(memory, "SET threads = 2", pool)
    assert run(memory, "SELECT current_setting('threads')", pool)["rows"] == [[1]]
    assert pool.stats()["discarded"] == 4  # each change, never a probe


def test_threads_reach_the_connection():
    pool = SessionPool()
    for threads in (1, 3):
        engine = DuckDBEngine(":memory:", threads=threads)
        assert run(engine, "SELECT current_setting('threads')", pool)["rows"] == [[threads]]


def test_a_replaced_database_file_is_reopened(tmp_path):
    path = tmp_path / "db.duckdb"

    def build(version: int, target: Path) -> None:
        with duckdb.connect(str(target)) as con:
            con.execute(f"CREATE TABLE v AS SELECT {version} AS version")

    build(1, path)
    engine, pool = DuckDBEngine(str(path), read_only=True, threads=1), SessionPool()
    assert run(engine, "SELECT version FROM v", pool)["rows"] == [[1]]
    assert run(engine, "SELECT version FROM v", pool)["rows"] == [[1]]
    build(2, tmp_path / "next.duckdb")
    os.replace(tmp_path / "next.duckdb", path)  # how the demo publishes a rebuilt file
    assert run(engine, "SELECT version FROM v", pool)["rows"] == [[2]]
    stats = pool.stats()
    assert (stats["opened"], stats["reused"], stats["failed_checks"]) == (2, 1, 1)


def test_a_read_write_file_is_not_held_between_statements(tmp_path):
    """An idle read-write connection would hold the file's lock against every other
    process: it is opened per statement, as before."""
    path = tmp_path / "rw.duckdb"
    engine, pool = DuckDBEngine(str(path), read_only=False, threads=1), SessionPool()
    run(engine, "SELECT 1", pool)
    assert pool.stats()["idle"] == {}
    with duckdb.connect(str(path)) as other:  # would fail with "Could not set lock"
        other.execute("SELECT 1")


# --- the engines' side --------------------------------------------------------------------
def settings(**values):
    base = dict(duckdb_path=":memory:", duckdb_is_read_only=False, duckdb_threads=None,
                session_max_idle=600.0, session_max_age=3600.0)
    return SimpleNamespace(**{**base, **values})


def test_one_engine_per_name_and_settings():
    a = get_engine("duckdb", settings())
    assert get_engine("duckdb", settings()) is a
    assert get_engine("duckdb", settings(duckdb_path="/x.duckdb")) is not a
    assert get_engine("duckdb", settings(session_max_idle=1.0)) is not a
    assert get_engine("duckdb", settings(duckdb_threads=7)).threads == 7


def test_threads_default_to_the_cpus_shared_by_the_pool_processes(monkeypatch):
    import tasks.engines as engines

    monkeypatch.setattr(engines, "cpu_count", lambda: 8)
    assert duckdb_threads(settings(), 1) == 8
    assert duckdb_threads(settings(), 2) == 4
    assert duckdb_threads(settings(), 3) == 2
    assert duckdb_threads(settings(), 16) == 1
    assert duckdb_threads(settings(duckdb_threads=5), 16) == 5


def test_databricks_key_names_the_warehouse_not_the_token():
    env = {"DATABRICKS_SERVER_HOSTNAME": "adb-1.azuredatabricks.net",
           "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/abc", "DATABRICKS_TOKEN": "dapi-secret"}
    key = DatabricksEngine(environ=env).key()
    assert "dapi-secret" not in repr(key)
    assert "/sql/1.0/warehouses/abc" in key
    assert DatabricksEngine(environ={**env, "DATABRICKS_TOKEN": "dapi-other"}).key() != key
    assert DatabricksEngine(environ={}).key()  # unconfigured: no error until connect()
    assert DatabricksEngine(environ=env).policy.max_uses == 1000


def test_databricks_session_closes_its_cursor_not_the_connection():
    class Cursor:
        closed = False

        def close(self):
            self.closed = True

    class Connection:
        open = True
        closed = False

        def cursor(self):
            self.last = Cursor()
            return self.last

        def close(self):
            self.closed = True

    connection, engine = Connection(), DatabricksEngine(environ={})
    session = engine.session(connection)
    assert isinstance(session, DatabricksSession)
    first = connection.last
    session.close()
    assert first.closed and not connection.closed
    engine.session(connection)
    assert connection.last is not first  # a fresh cursor per statement
    assert engine.healthy(connection)
    connection.open = False
    assert not engine.healthy(connection)
    assert not engine.keeps_connection_after(QueryError("x"))  # any error: a new session
