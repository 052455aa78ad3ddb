"""The Databricks SQL warehouse stand-in (tests/support/fakes/warehouse.py), driven by the
REAL databricks-sql-connector (Thrift over HTTPS), not by the project's engine.

Besides checking the stand-in, these tests pin what the connector does on the wire, which
the project's Databricks engine has to live with: how 401/403, 429/503, a starting
warehouse, a dropped connection, a cancel and a forgotten session surface; and what the
Databricks SDK (OAuth M2M) reads from a workspace and how its failures surface.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import urllib3
from databricks import sql
from databricks.sql import exc as dbexc

from support.fakes.warehouse import remote_fault, remote_state, start_warehouse

ROOT = Path(__file__).resolve().parents[2]

# Small retry budget: every 429/503 retry still sleeps max(Retry-After, _retry_delay_max) and
# the connector clamps _retry_delay_max to >= 5 s, so one retry costs 5 s whatever we pass.
FAST = dict(enable_telemetry=False, _retry_delay_min=0.1, _retry_delay_max=5,
            _retry_stop_after_attempts_count=3, _retry_stop_after_attempts_duration=20)
STATUS_WAIT = 0.5  # the stand-in's GetOperationStatus long-poll in these tests


@pytest.fixture
def wh(tmp_path):
    warehouse = start_warehouse(tmp_path, status_wait=STATUS_WAIT)
    yield warehouse
    warehouse.stop()


def connect(wh, **kwargs):
    return sql.connect(**wh.connect_kwargs(**{**FAST, **kwargs}))


def run_in_thread(cursor, statement):
    """Execute in another thread; returns (thread, outcome dict with 'error'/'rows'/'ended')."""
    outcome: dict = {}

    def target():
        try:
            cursor.execute(statement)
            outcome["rows"] = cursor.fetchall()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def thrift_requests(wh, method=None):
    return [(r["method"], r["status"]) for r in wh.stats.requests
            if method is None or r["method"] == method]


# ---- results ---------------------------------------------------------------------------

def test_select_returns_databricks_types(wh):
    with connect(wh) as conn, conn.cursor() as cur:
        cur.execute("""
            SELECT 7::INT AS i, 9000000000::BIGINT AS b, 2::SMALLINT AS si, 1.25::DOUBLE AS d,
                   0.5::FLOAT AS f, 'héllo' AS s, 12.34::DECIMAL(10,2) AS dec,
                   DATE '2026-11-02' AS day, TIMESTAMP '2026-11-02 03:04:05.123456' AS ts,
                   NULL::INT AS n, true AS flag
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL""")
        assert [(c[0], c[1], c[4], c[5]) for c in cur.description] == [
            ("i", "int", None, None), ("b", "bigint", None, None), ("si", "smallint", None, None),
            ("d", "double", None, None), ("f", "float", None, None), ("s", "string", None, None),
            ("dec", "decimal", 10, 2), ("day", "date", None, None), ("ts", "timestamp", None, None),
            ("n", "int", None, None), ("flag", "boolean", None, None)]
        rows = cur.fetchall()
    assert [tuple(r) for r in rows] == [
        (7, 9000000000, 2, 1.25, 0.5, "héllo", Decimal("12.34"), dt.date(2026, 11, 2),
         dt.datetime(2026, 11, 2, 3, 4, 5, 123456), None, True),
        (None,) * 11]
    run = wh.stats.executions[-1]
    assert run["arrow"] and run["direct_results"] and run["state"] == "CLOSED_STATE"


def test_column_based_results_when_the_client_cannot_read_arrow(wh, monkeypatch):
    import databricks.sql.backend.thrift_backend as thrift_backend

    monkeypatch.setattr(thrift_backend, "pyarrow", None)  # canReadArrowResult=False
    with connect(wh) as conn, conn.cursor() as cur:
        cur.execute("SELECT i::INT AS i, 'r' || i AS s, i / 2 AS half FROM range(3) t(i)")
        rows = [tuple(r) for r in cur.fetchall()]
    assert rows == [(0, "r0", 0.0), (1, "r1", 0.5), (2, "r2", 1.0)]
    assert wh.stats.executions[-1]["arrow"] is False


def test_named_and_positional_parameters(wh):
    with connect(wh) as conn, conn.cursor() as cur:
        cur.execute("SELECT :n + 1 AS n1, :s AS s, ':s' AS literal, :day AS day, "
                    ":amount AS amount, :flag AS flag, :ts AS ts, "
                    "CAST(:n AS VARCHAR)::INT AS again",
                    {"n": 41, "s": "it's", "day": dt.date(2026, 1, 31), "amount": Decimal("9.75"),
                     "flag": False, "ts": dt.datetime(2026, 1, 31, 23, 59, 58)})
        assert [tuple(r) for r in cur.fetchall()] == [
            (42, "it's", ":s", dt.date(2026, 1, 31), Decimal("9.75"), False,
             dt.datetime(2026, 1, 31, 23, 59, 58), 41)]
        sent = {p["name"]: p["type"] for p in wh.stats.executions[-1]["parameters"]}
        assert sent == {"n": "INT", "s": "STRING", "day": "DATE", "amount": "DECIMAL(3,2)",
                        "flag": "BOOLEAN", "ts": "TIMESTAMP"}
        cur.execute("SELECT ? * 2 AS twice, ? AS word", [21, "x"])
        assert [tuple(r) for r in cur.fetchall()] == [(42, "x")]
        with pytest.raises(dbexc.ServerOperationError,
                           match=r"UNBOUND_SQL_PARAMETER.*SQLSTATE: 42P02"):
            cur.execute("SELECT :missing AS m", {"other": 1})


def test_300k_rows_arrive_in_pages_through_fetchmany_arrow(tmp_path):
    wh = start_warehouse(tmp_path, status_wait=STATUS_WAIT, page_rows=50_000)
    try:
        with connect(wh) as conn, conn.cursor() as cur:
            cur.execute("SELECT i AS id, 'c' || (i % 7) AS label, i * 0.5 AS half "
                        "FROM range(300000) t(i)")
            chunks = []
            while True:
                table = cur.fetchmany_arrow(70_000)
                if not table.num_rows:
                    break
                chunks.append(table.num_rows)
                ids = table.column("id").to_pylist()
                assert ids == list(range(ids[0], ids[0] + table.num_rows))
            assert str(table.schema.field("id").type) == "int64"
        assert chunks == [70_000] * 4 + [20_000]
        # 50k rows with the direct results, then 5 FetchResults pages of 50k.
        assert wh.stats.calls["FetchResults"] == 5
    finally:
        wh.stop()


# ---- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("statement, error_class, sqlstate", [
    ("SELEC 1", "PARSE_SYNTAX_ERROR", "42601"),
    ("SELECT * FROM missing_table", "TABLE_OR_VIEW_NOT_FOUND", "42P01"),
    ("SELECT nope FROM range(1)", "UNRESOLVED_COLUMN", "42703"),
    ("SELECT 'abc'::INT", "CAST_INVALID_INPUT", "22018"),
])
def test_errors_are_server_operation_errors_with_sqlstate(wh, statement, error_class, sqlstate):
    with connect(wh) as conn, conn.cursor() as cur:
        with pytest.raises(dbexc.ServerOperationError) as caught:
            cur.execute(statement)
        message = str(caught.value)
        assert message.startswith(f"[{error_class}")
        assert f"SQLSTATE: {sqlstate}" in message
        assert set(caught.value.context) == {"operation-id", "diagnostic-info"}
        assert caught.value.context["operation-id"] == wh.stats.executions[-1]["id"]
        cur.execute("SELECT 1 AS still_usable")
        assert cur.fetchall()[0].still_usable == 1


def test_wrong_token_is_403_and_surfaces_as_request_error(wh):
    started = time.monotonic()
    with pytest.raises(dbexc.RequestError) as caught:
        connect(wh, access_token="dapi-wrong")
    assert time.monotonic() - started < 2  # not retried
    error = caught.value
    assert error.context["http-code"] == 403
    assert error.context["method"] == "OpenSession"
    assert error.context["error-message"] == ": Invalid access token."
    assert error.context["no-retry-reason"] == "non-retryable error"
    assert str(error).startswith("Error during request to server: : Invalid access token.")
    assert isinstance(error.args[1], EOFError)  # thrift read the text body as a reply
    assert thrift_requests(wh) == [("OpenSession", 403)]
    assert wh.stats.open_session == 0


def test_401_surfaces_like_403(wh):
    wh.faults.http_error(401, method="OpenSession", retry_after=None, message="Unauthorized")
    with pytest.raises(dbexc.RequestError) as caught:
        connect(wh)
    assert caught.value.context["http-code"] == 401
    assert caught.value.context["error-message"] == "Unauthorized"
    assert thrift_requests(wh) == [("OpenSession", 401)]


@pytest.mark.parametrize("authorization, status", [(None, 401), ("Bearer nope", 403)])
def test_raw_requests_without_the_token_are_refused(wh, authorization, status):
    request = urllib.request.Request(wh.url + wh.http_path, data=b"\x80\x01\x00\x01",
                                     headers={"Content-Type": "application/x-thrift"})
    if authorization:
        request.add_header("Authorization", authorization)
    import ssl

    context = ssl.create_default_context(cafile=str(wh.ca_file))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context, timeout=5)
    assert caught.value.code == status
    assert caught.value.headers["x-databricks-reason-phrase"]


# ---- cancel ---------------------------------------------------------------------------

def test_cancel_from_another_thread_stops_a_slow_statement(wh):
    wh.faults.slow(30, pattern="slowpoke")
    with connect(wh) as conn, conn.cursor() as cur:
        thread, outcome = run_in_thread(cur, "SELECT 'slowpoke' AS x")
        # ExecuteStatement answered (the cursor knows its command), then GetOperationStatus
        # long-polls: cancel lands in that loop.
        assert wait_for(lambda: cur.active_command_id is not None)
        time.sleep(STATUS_WAIT * 1.5)
        started = time.monotonic()
        cur.cancel()
        cancel_took = time.monotonic() - started
        thread.join(10)
        assert not thread.is_alive()
        # cursor.cancel() waits for the connector's request lock, held by the executing
        # thread's long-polled GetOperationStatus (often for more than one poll).
        assert cancel_took < 10 * STATUS_WAIT + 1
        assert outcome["ended"] - started < 10 * STATUS_WAIT + 1.5
        error = outcome["error"]
        assert type(error) is dbexc.DatabaseError
        assert "CANCELED" in str(error)
        assert wh.stats.cancel_operation == 1
        assert wh.stats.running_operations == []
        assert wh.stats.executions[-1]["state"] == "CANCELED_STATE"
        cur.execute("SELECT 1 AS after")
        assert cur.fetchall()[0].after == 1


def test_cancel_interrupts_a_long_duckdb_query(wh):
    with connect(wh) as conn, conn.cursor() as cur:
        thread, outcome = run_in_thread(cur, "SELECT sum(hash(i)) FROM range(100000000000) t(i)")
        assert wait_for(lambda: cur.active_command_id is not None)
        cur.cancel()
        thread.join(10)
        assert "CANCELED" in str(outcome["error"])
    # DuckDB really stopped: the operation's thread is gone.
    assert wait_for(lambda: not [t for t in threading.enumerate()
                                 if t.name.startswith("standin-op-")])


def test_cancel_while_execute_statement_is_in_flight_is_lost(wh):
    # A synchronous ExecuteStatement waits (here STATUS_WAIT) for direct results before it
    # answers; until then the cursor has no command id and cancel() only logs a warning.
    wh.faults.slow(30, pattern="slowpoke")
    with connect(wh) as conn, conn.cursor() as cur:
        thread, outcome = run_in_thread(cur, "SELECT 'slowpoke' AS x")
        assert wait_for(lambda: wh.stats.running_operations)
        assert cur.active_command_id is None
        cur.cancel()
        assert wh.stats.cancel_operation == 0
        thread.join(STATUS_WAIT * 3)
        assert thread.is_alive() and wh.stats.running_operations  # still running
        cur.cancel()  # now the cursor knows the command
        thread.join(10)
        assert "CANCELED" in str(outcome["error"]) and wh.stats.cancel_operation == 1


# ---- retries --------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_on_execute_are_retried_after_at_least_5_seconds(wh, status):
    with connect(wh) as conn, conn.cursor() as cur:
        wh.faults.http_error(status, count=1, method="ExecuteStatement", retry_after=1)
        started = time.monotonic()
        cur.execute("SELECT 1 AS one")
        took = time.monotonic() - started
        assert cur.fetchall()[0].one == 1
    # urllib3 retry sleeps max(Retry-After, _retry_delay_max) and _retry_delay_max >= 5.
    assert 5 <= took < 8
    assert thrift_requests(wh, "ExecuteStatement") == [("ExecuteStatement", status),
                                                       ("ExecuteStatement", 200)]
    assert wh.stats.execute_statement == 1  # the refused request never reached the warehouse


def test_retry_that_would_outlast_the_duration_budget_fails_at_once(wh):
    with connect(wh, _retry_stop_after_attempts_duration=3) as conn, conn.cursor() as cur:
        wh.faults.http_error(429, count=1, method="ExecuteStatement")
        started = time.monotonic()
        with pytest.raises(dbexc.RequestError) as caught:
            cur.execute("SELECT 1")
        assert time.monotonic() - started < 1
    error = caught.value
    assert isinstance(error.args[1], dbexc.MaxRetryDurationError)
    assert "max retry duration of 3.0 seconds" in str(error)
    assert error.context["no-retry-reason"] == "non-retryable error"
    assert error.context["http-code"] == 200  # stale: the previous request's code, not 429
    assert thrift_requests(wh, "ExecuteStatement") == [("ExecuteStatement", 429)]


def test_warehouse_starting_503_is_retried_until_it_is_up(wh):
    wh.faults.warehouse_starting(2)
    started = time.monotonic()
    with connect(wh) as conn, conn.cursor() as cur:
        took = time.monotonic() - started
        cur.execute("SELECT 1 AS up")
        assert cur.fetchall()[0].up == 1
    assert 5 <= took < 8
    assert thrift_requests(wh, "OpenSession") == [("OpenSession", 503), ("OpenSession", 200)]


def test_warehouse_starting_too_long_ends_in_a_raw_urllib3_error(wh):
    wh.faults.warehouse_starting(60)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError, match="too many 503 error responses"):
        connect(wh, _retry_stop_after_attempts_count=1)  # one retry, not one attempt
    assert 5 <= time.monotonic() - started < 8
    assert thrift_requests(wh) == [("OpenSession", 503), ("OpenSession", 503)]


# ---- dropped connections ----------------------------------------------------------------

def test_dropped_execute_is_resent_and_the_statement_runs_twice(wh):
    wh.db.execute("CREATE TABLE hits (n INT)")
    with connect(wh) as conn, conn.cursor() as cur:
        wh.faults.drop_connection(count=1, method="ExecuteStatement", after_processing=True)
        started = time.monotonic()
        cur.execute("INSERT INTO hits VALUES (1)")
        assert time.monotonic() - started < 2  # urllib3 re-sends after 2 * _retry_delay_min
        cur.execute("SELECT count(*) AS n FROM hits")
        assert cur.fetchall()[0].n == 2
    assert thrift_requests(wh, "ExecuteStatement")[:2] == [("ExecuteStatement", 0),
                                                           ("ExecuteStatement", 200)]
    assert wh.stats.statements[:2] == ["INSERT INTO hits VALUES (1)"] * 2


def test_dropped_execute_before_processing_runs_once(wh):
    wh.db.execute("CREATE TABLE hits (n INT)")
    with connect(wh) as conn, conn.cursor() as cur:
        wh.faults.drop_connection(count=1, method="ExecuteStatement", after_processing=False)
        cur.execute("INSERT INTO hits VALUES (1)")
        cur.execute("SELECT count(*) AS n FROM hits")
        assert cur.fetchall()[0].n == 1
    assert wh.stats.execute_statement == 2  # the INSERT once, the SELECT once


def test_dropped_fetch_results_answer_loses_a_page_and_raises_data_error(tmp_path):
    wh = start_warehouse(tmp_path, status_wait=STATUS_WAIT, page_rows=50_000)
    try:
        with connect(wh) as conn, conn.cursor() as cur:
            wh.faults.drop_connection(count=1, method="FetchResults", after_processing=True)
            with pytest.raises(dbexc.DataError, match="Expected results to start from 50000 but "
                                                      "they instead start at 100000"):
                cur.execute("SELECT * FROM range(200000)")
                while cur.fetchmany_arrow(100_000).num_rows:
                    pass
    finally:
        wh.stop()


# ---- sessions ---------------------------------------------------------------------------

def test_one_session_per_connect_reused_by_every_statement(wh):
    with connect(wh, session_configuration={"ansi_mode": "true"},
                 user_agent_entry="agent-turbo-tests") as conn:
        assert wh.stats.open_sessions == [conn.get_session_id_hex()]
        for n in range(3):
            with conn.cursor() as cur:
                cur.execute("SELECT :n AS n", {"n": n})
                assert cur.fetchall()[0].n == n
    with connect(wh):
        assert len(wh.stats.open_sessions) == 1
    assert (wh.stats.open_session, wh.stats.close_session, wh.stats.execute_statement) == (2, 2, 3)
    assert wh.stats.open_sessions == []
    assert {e["session"] for e in wh.stats.executions[:3]} == {wh.stats.executions[0]["session"]}
    assert wh.stats.user_agents[0] == "PyDatabricksSqlConnector/4.9.0 (agent-turbo-tests)"
    assert wh.stats.session_configs[0]["configuration"] == {
        "ansi_mode": "true", "spark.thriftserver.arrowBasedRowSet.timestampAsString": "false"}
    assert wh.stats.conf_overlays[0] == {
        "spark.thriftserver.arrowBasedRowSet.timestampAsString": "false"}


def test_catalog_and_schema_open_the_session_in_that_schema(wh):
    wh.db.execute("CREATE SCHEMA sales; CREATE TABLE sales.orders AS SELECT 3 AS id")
    with connect(wh, catalog="main", schema="sales") as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orders")
        assert cur.fetchall()[0].id == 3
    assert wh.stats.session_configs[0]["catalog"] == "main"
    with pytest.raises(dbexc.DatabaseError, match=r"SCHEMA_NOT_FOUND.*SQLSTATE: 42704"):
        connect(wh, schema="nowhere")


def test_forgotten_session_gives_invalid_session_handle(wh):
    conn = connect(wh)
    cur = conn.cursor()
    assert wh.faults.forget_sessions() == [conn.get_session_id_hex()]
    with pytest.raises(dbexc.DatabaseError) as caught:
        cur.execute("SELECT 1")
    assert type(caught.value) is dbexc.DatabaseError  # no SQLSTATE, no context
    assert str(caught.value) == ("Invalid SessionHandle: "
                                 f"SessionHandle [{conn.get_session_id_hex()}]")
    conn.close()  # the connector logs and swallows the same error on CloseSession
    assert wh.stats.close_session == 1


# ---- transport, TLS and the control endpoints ----------------------------------------------

def test_ssl_cert_file_is_enough_to_trust_the_stand_in(wh, monkeypatch):
    kwargs = wh.connect_kwargs(**FAST)
    del kwargs["_tls_trusted_ca_file"]
    with pytest.raises(urllib3.exceptions.MaxRetryError, match="CERTIFICATE_VERIFY_FAILED"):
        sql.connect(**{**kwargs, "_retry_stop_after_attempts_count": 1})
    monkeypatch.setenv("SSL_CERT_FILE", str(wh.ca_file))
    with sql.connect(**kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS trusted")
        assert cur.fetchall()[0].trusted == 1
    env = wh.env()
    assert env["SSL_CERT_FILE"] == str(wh.ca_file) and env["DATABRICKS_PORT"] == str(wh.port)


def test_oauth_m2m_as_databricks_documents_it_through_the_sdk(tmp_path, monkeypatch):
    """The connector's ``credentials_provider`` with the Databricks SDK's
    ``oauth_service_principal`` (the connector's documented M2M example): the SDK reads
    the workspace's metadata and its OAuth server's, then asks for a token (HTTP Basic,
    scope all-apis) that the stand-in accepts on Thrift requests. The SDK's failures, as
    tasks/engines/databricks/auth.py tells them apart: a refusal is a ValueError worded
    ``<error>: <description>``, a failing endpoint another ValueError."""
    from databricks.sdk.core import Config, oauth_service_principal

    wh = start_warehouse(tmp_path, oauth_clients={"sp": "sp-secret"}, status_wait=STATUS_WAIT)
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(wh.ca_file))  # requests: not SSL_CERT_FILE
        config = Config(host=wh.url, client_id="sp", client_secret="sp-secret",
                        auth_type="oauth-m2m")
        kwargs = {k: v for k, v in wh.connect_kwargs(**FAST).items() if k != "access_token"}
        with sql.connect(**kwargs, credentials_provider=lambda: oauth_service_principal(config)
                         ) as conn, conn.cursor() as cur:
            cur.execute("SELECT 7 AS seven")
            assert cur.fetchall()[0].seven == 7
        # Config() reads both documents; oauth_service_principal() reads the second again
        assert [(d["path"], d["status"]) for d in wh.stats.discovery_requests] == [
            ("/.well-known/databricks-config", 200),
            ("/oidc/.well-known/oauth-authorization-server", 200),
            ("/oidc/.well-known/oauth-authorization-server", 200)]
        assert [(t["client_id"], t["auth"], t["grant_type"], t["scope"], t["status"])
                for t in wh.stats.token_requests] == [
            ("sp", "basic", "client_credentials", "all-apis", 200)]
        assert {status for _, status in thrift_requests(wh)} == {200}

        refused = Config(host=wh.url, client_id="sp", client_secret="nope", auth_type="oauth-m2m")
        with pytest.raises(ValueError, match=r"^invalid_client: Client authentication failed$"):
            refused.authenticate()
        wh.faults.token_error(503)
        with pytest.raises(ValueError, match="Service Unavailable"):
            Config(host=wh.url, client_id="sp", client_secret="sp-secret",
                   auth_type="oauth-m2m").authenticate()
        assert [t["status"] for t in wh.stats.token_requests][1:] == [401, 503]
    finally:
        wh.stop()


def test_json_state_and_faults_endpoints(wh):
    with connect(wh) as conn:
        remote_fault(wh.url, wh.ca_file, "http_error", status=503, count=2,
                     method="ExecuteStatement")
        state = remote_state(wh.url, wh.ca_file)
        assert state["stats"]["open_sessions"] == [conn.get_session_id_hex()]
        assert state["faults"]["http"] == [{"status": 503, "remaining": 2,
                                            "method": "ExecuteStatement",
                                            "retry_after": 1, "message": None}]
        assert state["warehouse"]["http_path"] == wh.http_path
    with pytest.raises(urllib.error.HTTPError) as caught:
        remote_fault(wh.url, wh.ca_file, "explode")
    assert caught.value.code == 400


def test_command_line_entry_point_serves_a_separate_process(tmp_path):
    script = ROOT / "tests" / "support" / "fakes" / "warehouse.py"
    proc = subprocess.Popen([sys.executable, str(script), "--cert-dir", str(tmp_path / "certs"),
                             "--token", "dapi-cli", "--status-wait", "0.2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        env = info["env"]
        assert env["DATABRICKS_TOKEN"] == "dapi-cli"
        with sql.connect(server_hostname=env["DATABRICKS_SERVER_HOSTNAME"],
                         http_path=env["DATABRICKS_HTTP_PATH"],
                         access_token=env["DATABRICKS_TOKEN"],
                         _port=int(env["DATABRICKS_PORT"]),
                         _tls_trusted_ca_file=env["SSL_CERT_FILE"],
                         **FAST) as conn, conn.cursor() as cur:
            cur.execute("SELECT 40 + 2 AS answer")
            assert cur.fetchall()[0].answer == 42
        state = remote_state(info["url"], info["ca_file"])
        assert state["stats"]["statements"] == ["SELECT 40 + 2 AS answer"]
        assert state["stats"]["calls"]["OpenSession"] == 1
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
