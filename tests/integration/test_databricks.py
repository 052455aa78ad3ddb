"""Databricks queries through REAL workers against the warehouse stand-in
(tests/support/fakes/warehouse.py: the real databricks-sql-connector, Thrift over TLS,
DuckDB behind it), counting at the warehouse what the engine does: sessions opened and
closed, statements run and cancelled, what each request said about itself.

The stand-in runs in this process; each worker gets its environment (``wh.env()``:
DATABRICKS_* with DATABRICKS_PORT, and SSL_CERT_FILE to trust it). The tests that
break nothing share one stand-in and one worker; those that arm faults, count sessions
or change the worker's environment have a stand-in and a worker of their own. Every
worker consumes a queue of its own (``queue=``), so no other test's worker can take a
task meant for the stand-in; ``engine="databricks"`` would route it to ``warehouse``
(the io worker's queue, tests/unit/test_policy.py).
"""
from __future__ import annotations

import time
import uuid

import pytest
from celery.exceptions import TaskRevokedError

from celeryapp.dev.localworker import WorkerProcess
from support.fakes.warehouse import start_warehouse
from support.helpers import unique_queue, wait_for
from tasks.engines import databricks as dbx
from tasks.errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout
from tasks.query import run_query
from tasks.results import read_parquet

WAIT = 60
CLIENT_ID, CLIENT_SECRET = "sp-turbo", "dose" + uuid.uuid4().hex  # the stand-in's OAuth client
SLOW = "SELECT 'slowpoke' AS x"  # held RUNNING by wh.faults.slow(..., pattern="slowpoke")
CANCEL_SEEN_WITHIN_S = 2.0


def query(worker, sql, params=None, **options):
    return run_query.delay(sql, params, engine="databricks", queue=worker.queue, **options)


def retries_of(celery_app, result) -> int:
    return celery_app.backend.get_task_meta(result.id)["retries"] or 0


def thrift_requests(wh, method):
    return [r["status"] for r in wh.stats.requests if r["method"] == method]


def assert_nothing_left_at_the_warehouse(wh, within: float = 5.0) -> None:
    """No statement running and no session open: the stand-in says so."""
    wait_for(lambda: not wh.stats.running_operations, within, "no running statement")
    wait_for(lambda: not wh.stats.open_sessions, within, "no open session")


# --- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    wh = start_warehouse(tmp_path_factory.mktemp("warehouse"))
    yield wh
    wh.stop()


@pytest.fixture(scope="module")
def shared(warehouse, celery_app, base_dir):
    """One prefork worker (one process) on a queue of its own, for what breaks nothing."""
    queue = unique_queue()
    (base_dir / "logs").mkdir(exist_ok=True)
    worker = WorkerProcess(name=f"worker@dbx-{queue}", queues=queue, concurrency=1,
                           env=warehouse.env(),
                           logfile=base_dir / "logs" / f"databricks-{queue}.log").start(celery_app)
    worker.queue = queue
    yield worker
    worker.stop()


@pytest.fixture
def wh(warehouse):
    """The shared stand-in, its counters reset and no fault armed."""
    warehouse.faults.clear()
    warehouse.stats.reset()
    yield warehouse
    warehouse.faults.clear()


@pytest.fixture
def own(tmp_path, start_worker):
    """``own(env=..., pool=..., **stand-in options)``: a stand-in and a one-process worker
    of the test's own; ``env`` is a function of the stand-in giving the worker's
    DATABRICKS_* (default ``wh.env()``)."""
    made = []

    def make(env=None, pool="prefork", **options):
        wh = start_warehouse(tmp_path / f"wh{len(made)}", **options)
        made.append(wh)
        queue = unique_queue()
        worker = start_worker(queues=queue, concurrency=1, pool=pool,
                              env=(env or (lambda w: w.env()))(wh))
        worker.queue = queue
        return wh, worker

    yield make
    for wh in made:
        wh.stop()


# --- results ------------------------------------------------------------------------------
def test_a_query_and_its_types(wh, shared):
    result = query(shared, """
        SELECT 7::INT AS i, 9000000000::BIGINT AS b, 1.25::DOUBLE AS d, 'héllo' AS s,
               12.34::DECIMAL(10,2) AS dec, DATE '2026-11-02' AS day,
               TIMESTAMP '2026-11-02 03:04:05.123456' AS ts, NULL::INT AS n, true AS flag
    """).get(timeout=WAIT)
    assert result["columns"] == ["i", "b", "d", "s", "dec", "day", "ts", "n", "flag"]
    assert result["rows"] == [[7, 9000000000, 1.25, "héllo", "12.34", "2026-11-02",
                               "2026-11-02T03:04:05.123456", None, True]]
    assert result["engine"] == "databricks" and result["attempts"] == 1
    assert not result["truncated"]
    # run asynchronously and polled (the cancel protocol), cloud fetch allowed by default
    run = wh.stats.executions[-1]
    assert run["run_async"] and run["cloud_fetch"] and run["state"] == "CLOSED_STATE"


def test_named_parameters_are_bound_by_the_warehouse(wh, shared):
    result = query(shared, "SELECT :n + 1 AS n1, :s AS s, ':s' AS literal",
                   {"n": 41, "s": "it's"}).get(timeout=WAIT)
    assert result["rows"] == [[42, "it's", ":s"]]
    run = wh.stats.executions[-1]
    assert run["statement"] == "SELECT :n + 1 AS n1, :s AS s, ':s' AS literal"  # not inlined
    assert {p["name"]: p["value"] for p in run["parameters"]} == {"n": "41", "s": "it's"}


def test_300k_rows_are_spilled_to_parquet(wh, shared):
    result = query(shared, "SELECT i AS id, 'c' || (i % 7) AS label, i * 0.5 AS half "
                           "FROM range(300000) t(i)").get(timeout=WAIT)
    assert result["truncated"] and result["row_count"] == 300_000
    assert len(result["rows"]) == 20 and result["rows"][1] == [1, "c1", "0.5"]  # preview; a decimal
    table = read_parquet(result["parquet_path"])
    assert table.num_rows == 300_000 and table.column_names == ["id", "label", "half"]
    ids = table.column("id").to_pylist()
    assert ids == list(range(300_000))
    assert wh.stats.calls["FetchResults"] == 3  # 100k-row pages: no page fetched twice


def test_the_task_id_reaches_the_query_history(wh, shared):
    result = query(shared, "SELECT 1 AS one")
    result.get(timeout=WAIT)
    run = wh.stats.executions[-1]
    assert run["conf_overlay"]["query_tags"] == f"turbo_task_id:{result.id}"
    agents = {r["user_agent"] for r in wh.stats.requests}
    assert agents == {f"PyDatabricksSqlConnector/4.9.0 ({dbx.USER_AGENT})"}, agents


# --- SQL errors: permanent, at once ----------------------------------------------------
@pytest.mark.parametrize("statement, sqlstate", [
    ("SELEC 1", "42601"),
    ("SELECT * FROM missing_table", "42P01"),
    # the column's name says "cancelled": still an SQL error, not a timeout
    ("SELECT cancelled_at FROM range(3) t(i)", "42703"),
])
def test_sql_errors_fail_at_once(wh, shared, celery_app, statement, sqlstate):
    started = time.monotonic()
    result = query(shared, statement, retries=3)
    with pytest.raises(QueryError, match=f"databricks \\[{sqlstate}\\]"):
        result.get(timeout=WAIT)
    assert time.monotonic() - started < 10
    assert wh.stats.execute_statement == 1 and retries_of(celery_app, result) == 0
    assert wh.stats.running_operations == []


# --- sessions --------------------------------------------------------------------------------
def test_one_session_serves_every_statement_of_a_worker_process(own):
    wh, worker = own()
    for n in range(6):
        assert query(worker, "SELECT :n AS n", {"n": n}).get(timeout=WAIT)["rows"] == [[n]]
        if n == 2:  # an SQL error the warehouse judged keeps the session too
            with pytest.raises(QueryError):
                query(worker, "SELEC 1").get(timeout=WAIT)
    assert wh.stats.open_session == 1 and wh.stats.close_session == 0
    assert wh.stats.execute_statement == 7
    assert len({run["session"] for run in wh.stats.executions}) == 1
    assert len(wh.stats.open_sessions) == 1  # kept for the next query


def test_a_forgotten_session_is_replaced_and_the_query_succeeds(own, celery_app):
    wh, worker = own()
    assert query(worker, "SELECT 1 AS a").get(timeout=WAIT)["rows"] == [[1]]
    assert len(wh.faults.forget_sessions()) == 1  # a warehouse restart
    result = query(worker, "SELECT 2 AS b", retries=0)
    assert result.get(timeout=WAIT)["rows"] == [[2]]  # no retry needed, none allowed
    assert result.get()["attempts"] == 1
    assert wh.stats.open_session == 2
    assert [run["state"] for run in wh.stats.executions] == [
        "CLOSED_STATE", "INVALID_SESSION", "CLOSED_STATE"]


# --- credentials ------------------------------------------------------------------------------
def test_a_wrong_token_fails_at_once_naming_it(own, celery_app):
    wh, worker = own(env=lambda w: {**w.env(), "DATABRICKS_TOKEN": "dapi-wrong"})
    started = time.monotonic()
    result = query(worker, "SELECT 1", retries=3)
    with pytest.raises(EngineNotConfigured, match="HTTP 403.*check DATABRICKS_TOKEN") as raised:
        result.get(timeout=WAIT)
    assert time.monotonic() - started < 10
    assert "dapi-wrong" not in str(raised.value)
    assert thrift_requests(wh, "OpenSession") == [403]  # once, never retried
    assert retries_of(celery_app, result) == 0


def test_credentials_refused_on_a_pooled_session_fail_at_once(wh, shared, celery_app):
    query(shared, "SELECT 1").get(timeout=WAIT)  # a session in the worker's pool
    wh.faults.http_error(403, count=1, method="ExecuteStatement", retry_after=None,
                         message="Token revoked")  # e.g. the token was revoked meanwhile
    result = query(shared, "SELECT 2", retries=3)
    with pytest.raises(EngineNotConfigured, match="HTTP 403.*DATABRICKS_TOKEN"):
        result.get(timeout=WAIT)
    assert retries_of(celery_app, result) == 0
    assert thrift_requests(wh, "ExecuteStatement") == [200, 403]
    # that session was closed; the next query opens a new one
    assert query(shared, "SELECT 3 AS c").get(timeout=WAIT)["rows"] == [[3]]
    assert wh.stats.open_session >= 1 and len(wh.stats.open_sessions) == 1


def test_oauth_m2m_service_principal(own):
    wh, worker = own(env=lambda w: w.oauth_env(CLIENT_ID),
                     oauth_clients={CLIENT_ID: CLIENT_SECRET})
    for n in range(3):
        assert query(worker, "SELECT :n AS n", {"n": n}).get(timeout=WAIT)["rows"] == [[n]]
    assert [(t["client_id"], t["auth"], t["scope"], t["status"])
            for t in wh.stats.token_requests] == [(CLIENT_ID, "basic", "all-apis", 200)]
    assert wh.stats.open_session == 1
    assert set(thrift_requests(wh, "ExecuteStatement")) == {200}
    # through the Databricks SDK: the workspace's discovery documents, then its token
    assert [d["path"] for d in wh.stats.discovery_requests] == [
        "/.well-known/databricks-config", "/oidc/.well-known/oauth-authorization-server"]
    assert CLIENT_SECRET not in worker.logfile.read_text()


def test_a_refused_oauth_client_fails_at_once_naming_it(own, celery_app):
    wrong = "dose-wrong-" + uuid.uuid4().hex
    wh, worker = own(env=lambda w: {**w.oauth_env(CLIENT_ID), "DATABRICKS_CLIENT_SECRET": wrong},
                     oauth_clients={CLIENT_ID: CLIENT_SECRET})
    started = time.monotonic()
    result = query(worker, "SELECT 1", retries=3)
    with pytest.raises(EngineNotConfigured,
                       match="invalid_client.*DATABRICKS_CLIENT_SECRET") as raised:
        result.get(timeout=WAIT)
    assert time.monotonic() - started < 10
    assert [t["status"] for t in wh.stats.token_requests] == [401]
    assert wh.stats.requests == []  # no Thrift request went out without a token
    assert retries_of(celery_app, result) == 0
    assert wrong not in str(raised.value) and wrong not in worker.logfile.read_text()


def test_a_failing_token_endpoint_is_retried_by_the_task(own, celery_app):
    wh, worker = own(env=lambda w: w.oauth_env(CLIENT_ID), oauth_clients={CLIENT_ID: CLIENT_SECRET})
    wh.faults.token_error(503)
    result = query(worker, "SELECT 5 AS five", retries=2)
    assert result.get(timeout=WAIT)["rows"] == [[5]]
    assert retries_of(celery_app, result) == 1  # EngineUnavailable, then a token
    assert [t["status"] for t in wh.stats.token_requests] == [503, 200]


def test_session_configuration_and_cloud_fetch_come_from_the_environment(own):
    wh, worker = own(env=lambda w: {**w.env(),
                                    "DATABRICKS_SESSION_CONF": "ansi_mode=true,timezone=UTC",
                                    "DATABRICKS_USE_CLOUD_FETCH": "false"})
    query(worker, "SELECT 1").get(timeout=WAIT)
    conf = wh.stats.session_configs[0]["configuration"]
    assert conf["ansi_mode"] == "true" and conf["timezone"] == "UTC"
    assert wh.stats.executions[-1]["cloud_fetch"] is False


# --- what passes: the project's retries, within the timeout ---------------------------------
def test_429_then_success_is_retried_by_the_project(wh, shared, celery_app):
    """With 4 s left the connector's own retry (at least 5 s away) would outlast the call:
    it gives up at once and turbo.query retries with its backoff."""
    wh.faults.http_error(429, count=1, method="ExecuteStatement", retry_after=1)
    started = time.monotonic()
    result = query(shared, "SELECT 42 AS answer", timeout=4, retries=3)
    assert result.get(timeout=WAIT)["rows"] == [[42]]
    took = time.monotonic() - started
    assert result.get()["attempts"] == 2 and retries_of(celery_app, result) == 1
    assert took < 5, took  # not the connector's 5-60 s sleep
    assert thrift_requests(wh, "ExecuteStatement") == [429, 200]


def test_429_with_time_to_spare_is_retried_by_the_connector_once(wh, shared):
    wh.faults.http_error(429, count=1, method="ExecuteStatement", retry_after=1)
    started = time.monotonic()
    result = query(shared, "SELECT 43 AS answer", timeout=30)
    assert result.get(timeout=WAIT)["rows"] == [[43]]
    assert 5 <= time.monotonic() - started < 10  # one retry 5 s later (its floor), not 60 s
    assert result.get()["attempts"] == 1


def test_warehouse_starting_succeeds_after_project_retries(wh, shared):
    """The timeout covers every attempt: a warehouse up after 1.5 s is within 4.9 s (short
    of the connector's 5 s floor, so the project retries)."""
    wh.faults.warehouse_starting(1.5)
    started = time.monotonic()
    result = query(shared, "SELECT 'up' AS state", timeout=4.9, retries=20)
    assert result.get(timeout=WAIT)["rows"] == [["up"]]
    took = time.monotonic() - started
    assert result.get()["attempts"] >= 2
    assert 1.4 < took < 4.9 + 10, took


def test_503_twice_is_retried_within_the_timeout(wh, shared, celery_app):
    """Transient errors retried within the call's timeout end in its result."""
    wh.faults.http_error(503, count=2, method="ExecuteStatement", retry_after=1)
    started = time.monotonic()
    result = query(shared, "SELECT 44 AS answer", timeout=5, retries=3)
    assert result.get(timeout=WAIT)["rows"] == [[44]]
    assert time.monotonic() - started < 5 + 10
    assert result.get()["attempts"] == 3 and retries_of(celery_app, result) == 2
    assert thrift_requests(wh, "ExecuteStatement") == [503, 503, 200]


def test_a_persistent_503_ends_in_bounded_time_leaving_nothing_open(own, celery_app):
    wh, worker = own()
    wh.faults.http_error(503, count=100_000, method="ExecuteStatement", retry_after=1)
    started = time.monotonic()
    result = query(worker, "SELECT 1", timeout=5, retries=2)
    with pytest.raises((EngineUnavailable, TaskTimeout)):
        result.get(timeout=WAIT)
    assert time.monotonic() - started < 5 + 10  # three attempts within the one timeout
    assert retries_of(celery_app, result) == 2
    assert wh.stats.execute_statement == 0  # never reached the warehouse
    assert wh.stats.open_session == wh.stats.close_session == 3
    assert_nothing_left_at_the_warehouse(wh)


def test_retries_that_would_outlast_the_timeout_are_not_made(own, celery_app):
    """With the default backoff (2 s, doubling) a 503 that does not stop ends within the
    call's 5 s, not after 4 attempts of 5 s each and the pauses between them (10-13 s
    before): the retry that cannot fit is not made, and the error says so."""
    wh, worker = own(env=lambda w: {**w.env(), "TURBO_RETRY_BACKOFF": "2",
                                    "TURBO_RETRY_BACKOFF_MAX": "300"})
    wh.faults.http_error(503, count=100_000, method="ExecuteStatement", retry_after=1)
    started = time.monotonic()
    result = query(worker, "SELECT 1", timeout=5, retries=20)
    with pytest.raises(EngineUnavailable) as raised:
        result.get(timeout=WAIT)
    assert time.monotonic() - started < 5 + 10
    message, details = str(raised.value), raised.value.details
    assert "another attempt would not fit in the timeout of 5s" in message
    assert f"gave up after {details['attempts']} attempts in " in message
    assert 2 <= details["attempts"] < 21 and retries_of(celery_app, result) < 20
    assert details["gave_up"] == "another attempt would not fit in the timeout of 5s"
    assert_nothing_left_at_the_warehouse(wh)


# --- timeouts and revokes: cancelled at the warehouse, nothing left open ----------------------
def test_a_timeout_while_connecting(own):
    wh, worker = own()
    wh.faults.delay(4, method="OpenSession")
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="timeout of 1s"):
        query(worker, "SELECT 1", timeout=1).get(timeout=WAIT)
    assert time.monotonic() - started < 3.5  # not the 4 s OpenSession
    # the session opened after all is closed at once; nothing ran on it
    wait_for(lambda: wh.stats.close_session == 1, 10, "the late session closed")
    assert wh.stats.open_session == 1 and wh.stats.execute_statement == 0
    assert_nothing_left_at_the_warehouse(wh)
    assert query(worker, "SELECT 2 AS after").get(timeout=WAIT)["rows"] == [[2]]


def test_a_timeout_cancels_the_running_statement_at_the_warehouse(own):
    wh, worker = own()
    wh.faults.slow(60, pattern="slowpoke")
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="timeout of 2s"):
        query(worker, SLOW, timeout=2).get(timeout=WAIT)
    took = time.monotonic() - started
    assert wh.stats.cancel_operation == 1
    wait_for(lambda: not wh.stats.running_operations, CANCEL_SEEN_WITHIN_S, "statement cancelled")
    assert wh.stats.executions[-1]["state"] in ("CANCELED_STATE", "CLOSED_STATE")
    assert took < 2 + 2.5, took  # the deadline, then at most one status long-poll (1 s)
    assert_nothing_left_at_the_warehouse(wh)
    assert wh.stats.close_session == 1


def test_a_timeout_while_fetching_stops_the_fetch_and_closes_the_session(own):
    wh, worker = own()
    wh.faults.delay(1.5, method="FetchResults", count=None)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="timeout of 2.5s"):
        query(worker, "SELECT * FROM range(600000) t(i)", timeout=2.5).get(timeout=WAIT)
    assert time.monotonic() - started < 2.5 + 3
    assert wh.stats.calls["FetchResults"] <= 2  # of 6 pages
    assert_nothing_left_at_the_warehouse(wh)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_revoke_cancels_the_running_statement_at_the_warehouse(own, celery_app, pool):
    wh, worker = own(pool=pool)
    wh.faults.slow(60, pattern="slowpoke")
    slow = query(worker, SLOW, timeout=120)
    running = wait_for(lambda: wh.stats.running_operations, 30, "the statement running")
    # the worker reports the warehouse's statement id while it runs
    replies = celery_app.control.inspect(destination=[worker.name], timeout=5)._request(
        "running_queries") or {}
    entries = wait_for(lambda: [e for e in (celery_app.control.inspect(
        destination=[worker.name], timeout=5)._request("running_queries") or {}).get(
        worker.name, []) if e.get("statement_id")], 10, "the statement id reported") or replies
    assert entries[0]["statement_id"].replace("-", "") == running[0]["id"].replace("-", "")
    assert entries[0]["engine"] == "databricks"
    revoked_at = time.monotonic()
    slow.revoke(terminate=True, signal="SIGUSR1")
    wait_for(lambda: not wh.stats.running_operations, CANCEL_SEEN_WITHIN_S + 1,
             "the statement cancelled")
    assert time.monotonic() - revoked_at < CANCEL_SEEN_WITHIN_S + 1
    assert wh.stats.cancel_operation == 1
    wait_for(lambda: slow.state == "REVOKED", 20, "REVOKED")
    with pytest.raises(TaskRevokedError):
        slow.get(timeout=5)
    assert_nothing_left_at_the_warehouse(wh)
    assert query(worker, "SELECT 3 AS next").get(timeout=WAIT)["rows"] == [[3]]


# --- the engine's hold on the connector (in this process, no worker) ------------------------
def test_the_retry_budget_follows_the_deadline_on_a_real_connection(wh, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(wh.ca_file))
    engine = dbx.DatabricksEngine(environ=wh.env())
    connection = engine.connect(deadline=time.monotonic() + 7)
    try:
        backend = connection.session.backend
        assert 6 < backend._retry_stop_after_attempts_duration <= 7
        assert 6 < backend.retry_policy.stop_after_attempts_duration <= 7
        assert backend._retry_delay_max == 5 and backend._retry_stop_after_attempts_count == 3
        dbx.bound_retries(connection, time.monotonic() + 3)
        assert 2 < backend.retry_policy.stop_after_attempts_duration <= 3
        assert backend._transport.retry_policy is backend.retry_policy  # what requests use
    finally:
        connection.close()
