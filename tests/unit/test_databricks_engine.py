"""Databricks engine without Celery: configuration from the environment, error
classification with the connector's own exception classes, the statement's cancel
protocol on a fake cursor, and credentials through the Databricks SDK against the
warehouse stand-in in this process (the real connector and the real SDK). The same
engine through real workers is tests/integration/test_databricks.py."""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time

import pytest
import urllib3
from databricks.sql import exc as dbexc
from databricks.sql.backend.types import CommandState

from support.fakes.warehouse import start_warehouse
from tasks.engines import databricks as dbx
from tasks.engines.databricks import (
    CredentialsError,
    DatabricksEngine,
    SdkCredentials,
    StatementCancelled,
    parse_session_conf,
)
from tasks.engines.databricks.auth import trust_ssl_cert_file_in_requests
from tasks.engines.databricks.config import SDK_CREDENTIAL_SETTINGS, SECRET_SETTINGS
from tasks.errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout

ENV = {"DATABRICKS_SERVER_HOSTNAME": "adb-1.azuredatabricks.net",
       "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/abc", "DATABRICKS_TOKEN": "dapi-secret"}
OAUTH_ENV = {"DATABRICKS_SERVER_HOSTNAME": "adb-1.azuredatabricks.net",
             "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/abc",
             "DATABRICKS_CLIENT_ID": "sp-client", "DATABRICKS_CLIENT_SECRET": "dose-secret"}


# --- configuration ------------------------------------------------------------------------
def test_missing_settings_are_named_without_leaking_values():
    engine = DatabricksEngine(environ={"DATABRICKS_TOKEN": "dapi-secret"})
    with pytest.raises(EngineNotConfigured) as raised:
        engine.open()
    message = str(raised.value)
    assert "DATABRICKS_SERVER_HOSTNAME" in message and "DATABRICKS_HTTP_PATH" in message
    assert "DATABRICKS_TOKEN" not in message  # it is set
    assert "dapi-secret" not in message


def test_no_credentials_names_both_ways_to_give_them():
    env = {k: v for k, v in ENV.items() if k != "DATABRICKS_TOKEN"}
    with pytest.raises(EngineNotConfigured, match="DATABRICKS_TOKEN .*DATABRICKS_CLIENT_ID"):
        DatabricksEngine(environ=env).connect_args()
    with pytest.raises(EngineNotConfigured, match="DATABRICKS_CLIENT_SECRET") as raised:
        DatabricksEngine(environ={**env, "DATABRICKS_CLIENT_ID": "sp"}).connect_args()
    assert "DATABRICKS_TOKEN" not in str(raised.value)
    with pytest.raises(EngineNotConfigured, match="either DATABRICKS_TOKEN or"):
        DatabricksEngine(environ={**ENV, "DATABRICKS_CLIENT_ID": "sp"}).connect_args()
    with pytest.raises(EngineNotConfigured,
                       match="either DATABRICKS_TOKEN or DATABRICKS_AUTH_TYPE=azure-client"):
        DatabricksEngine(environ={**ENV, "DATABRICKS_AUTH_TYPE": "azure-client-secret"}
                         ).connect_args()
    with pytest.raises(EngineNotConfigured,
                       match="set DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET in"):
        DatabricksEngine(environ={**env, "DATABRICKS_AUTH_TYPE": "oauth-m2m"}).connect_args()
    pat = DatabricksEngine(environ={**ENV, "DATABRICKS_AUTH_TYPE": "pat"}).connect_args()
    assert pat["access_token"] == "dapi-secret"


def test_a_token_is_sent_as_it_is_and_ignores_the_sdks_settings():
    """DATABRICKS_TOKEN works as before the SDK came: the connector's access_token."""
    args = DatabricksEngine(environ={**ENV, "ARM_CLIENT_ID": "x", "ARM_CLIENT_SECRET": "y",
                                     "DATABRICKS_CONFIG_PROFILE": "ci"}).connect_args()
    assert args["access_token"] == "dapi-secret" and "credentials_provider" not in args


def test_the_sdks_own_settings_choose_its_unified_authentication():
    env = {k: v for k, v in ENV.items() if k != "DATABRICKS_TOKEN"}
    for extra in ({"DATABRICKS_AUTH_TYPE": "azure-client-secret"},
                  {"DATABRICKS_CONFIG_PROFILE": "ci"},
                  {"ARM_CLIENT_ID": "app", "ARM_CLIENT_SECRET": "azure-secret",
                   "ARM_TENANT_ID": "tenant"}):
        engine = DatabricksEngine(environ={**env, **extra})
        provider = engine.connect_args()["credentials_provider"]
        assert isinstance(provider, SdkCredentials)
        assert provider.host == "https://adb-1.azuredatabricks.net"
        assert "azure-secret" not in repr(provider) + repr(engine.config()) + repr(engine.key())
    names = DatabricksEngine(environ={**env, "DATABRICKS_AUTH_TYPE": "azure-client-secret",
                                      "ARM_CLIENT_ID": "app", "ARM_CLIENT_SECRET": "s",
                                      "ARM_TENANT_ID": "t"}).config().credential_names
    assert names == ("the Databricks SDK's settings (DATABRICKS_AUTH_TYPE=azure-client-secret, "
                     "ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID)")
    # a client id with an auth type of the SDK's that needs no secret (e.g. github-oidc)
    github = DatabricksEngine(environ={**env, "DATABRICKS_CLIENT_ID": "sp",
                                       "DATABRICKS_AUTH_TYPE": "github-oidc"})
    assert github.connect_args()["credentials_provider"].auth_type() == "github-oidc"


def test_the_sdks_credential_settings_are_the_installed_sdks():
    """config.SDK_CREDENTIAL_SETTINGS lists what the SDK counts as credentials (besides
    DATABRICKS_TOKEN/CLIENT_ID/CLIENT_SECRET), SECRET_SETTINGS what it masks: an SDK
    upgrade that adds one fails here first (the engine's key would miss it)."""
    from databricks.sdk.config import Config

    attributes = [a for a in Config.attributes() if a.env]
    credentials = {name for a in attributes if a.auth for name in (a.env, *a.env_aliases)}
    assert credentials - {"DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID",
                          "DATABRICKS_CLIENT_SECRET"} == set(SDK_CREDENTIAL_SETTINGS)
    assert {a.env for a in attributes if a.sensitive} == set(SECRET_SETTINGS)
    assert {"DATABRICKS_AUTH_TYPE", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE",
            "ARM_ENVIRONMENT"} <= {a.env for a in attributes}


def test_connect_args_come_from_the_environment():
    args = DatabricksEngine(environ={**ENV, "DATABRICKS_CATALOG": "main"}).connect_args()
    assert {k: args[k] for k in ("server_hostname", "http_path", "access_token", "catalog")} == {
        "server_hostname": ENV["DATABRICKS_SERVER_HOSTNAME"],
        "http_path": ENV["DATABRICKS_HTTP_PATH"], "access_token": "dapi-secret", "catalog": "main"}
    assert "schema" not in args and "session_configuration" not in args
    assert args["_port"] == 443
    assert args["enable_telemetry"] is False  # else connect() waits on a feature-flag request
    assert args["use_cloud_fetch"] is True  # the connector's default
    assert args["user_agent_entry"] == dbx.USER_AGENT and dbx.USER_AGENT.startswith("agent-turbo/")
    # the connector's own 429/503 retry: 5 s apart (its floor), a few, within the deadline
    assert args["_retry_delay_max"] == 5 and args["_retry_stop_after_attempts_count"] == 3
    assert "_retry_stop_after_attempts_duration" not in args  # no deadline: its default
    timed = DatabricksEngine(environ=ENV).connect_args(deadline=time.monotonic() + 30)
    assert 29 < timed["_retry_stop_after_attempts_duration"] <= 30
    late = DatabricksEngine(environ=ENV).connect_args(deadline=time.monotonic() - 5)
    assert late["_retry_stop_after_attempts_duration"] == 1  # the connector's minimum


def test_every_setting_reaches_the_connector():
    args = DatabricksEngine(environ={
        **ENV, "DATABRICKS_SERVER_HOSTNAME": "https://adb-1.azuredatabricks.net/",
        "DATABRICKS_PORT": "8443", "DATABRICKS_SCHEMA": "sales",
        "DATABRICKS_SESSION_CONF": "ansi_mode=true, timezone = UTC,spark.sql.x=a=b",
        "DATABRICKS_USE_CLOUD_FETCH": "false", "DATABRICKS_ENABLE_TELEMETRY": "yes"}).connect_args()
    assert args["server_hostname"] == "adb-1.azuredatabricks.net"  # scheme and slash dropped
    assert args["_port"] == 8443 and args["schema"] == "sales"
    assert args["session_configuration"] == {"ansi_mode": "true", "timezone": "UTC",
                                             "spark.sql.x": "a=b"}
    assert args["use_cloud_fetch"] is False and args["enable_telemetry"] is True


@pytest.mark.parametrize("name, value, expected", [
    ("DATABRICKS_PORT", "https", "not a TCP port"),
    ("DATABRICKS_PORT", "70000", "not a TCP port"),
    ("DATABRICKS_SERVER_HOSTNAME", "adb-1.net:443", "DATABRICKS_PORT"),
    ("DATABRICKS_USE_CLOUD_FETCH", "maybe", "DATABRICKS_USE_CLOUD_FETCH='maybe' is not a boolean"),
    ("DATABRICKS_ENABLE_TELEMETRY", "2", "is not a boolean"),
    ("DATABRICKS_SESSION_CONF", "ansi_mode", "'ansi_mode' is not key=value"),
    ("DATABRICKS_SESSION_CONF", '{"ansi_mode": "true"}', "is not key=value"),
    ("DATABRICKS_SESSION_CONF", "a=1,a=2", "sets 'a' twice"),
    ("DATABRICKS_SESSION_CONF",
     "spark.thriftserver.arrowBasedRowSet.timestampAsString=true", "requires"),
])
def test_bad_settings_are_refused_with_the_variable_named(name, value, expected):
    with pytest.raises(EngineNotConfigured, match=expected) as raised:
        DatabricksEngine(environ={**ENV, name: value}).connect_args()
    assert "dapi-secret" not in str(raised.value)


def test_session_conf_format():
    assert parse_session_conf(None) == {} and parse_session_conf(" ") == {}
    assert parse_session_conf("a=1,,b= 2 ,") == {"a": "1", "b": "2"}
    assert parse_session_conf("STATEMENT_TIMEOUT=3600") == {"STATEMENT_TIMEOUT": "3600"}


def test_oauth_settings_give_a_credentials_provider_not_a_token():
    engine = DatabricksEngine(environ={**OAUTH_ENV, "DATABRICKS_PORT": "8443"})
    args = engine.connect_args()
    assert "access_token" not in args
    provider = args["credentials_provider"]
    assert isinstance(provider, SdkCredentials) and provider.auth_type() == "oauth-m2m"
    assert provider.host == "https://adb-1.azuredatabricks.net:8443"
    assert "sp-client" in provider.label
    assert engine.connect_args()["credentials_provider"] is provider  # one token per process
    assert "dose-secret" not in repr(engine.config()) + repr(engine.key()) + repr(provider)


def test_key_names_the_session_settings_not_the_secrets():
    key = DatabricksEngine(environ=ENV).key()
    assert "dapi-secret" not in repr(key)
    assert DatabricksEngine(environ={**ENV, "DATABRICKS_SESSION_CONF": "a=1"}).key() != key
    assert DatabricksEngine(environ={**ENV, "DATABRICKS_PORT": "8443"}).key() != key
    oauth = DatabricksEngine(environ=OAUTH_ENV).key()
    assert oauth != key and "dose-secret" not in repr(oauth)
    assert DatabricksEngine(environ={**OAUTH_ENV, "DATABRICKS_CLIENT_SECRET": "x"}).key() != oauth
    assert DatabricksEngine(environ={"DATABRICKS_SESSION_CONF": "garbage"}).key()  # no error yet
    # the SDK's settings count too, never in clear
    azure = {k: v for k, v in ENV.items() if k != "DATABRICKS_TOKEN"}
    azure.update(ARM_CLIENT_ID="app", ARM_CLIENT_SECRET="azure-secret", ARM_TENANT_ID="t")
    azure_key = DatabricksEngine(environ=azure).key()
    assert azure_key != key and "azure-secret" not in repr(azure_key)
    for name, value in (("ARM_CLIENT_SECRET", "other"), ("DATABRICKS_AUTH_TYPE", "azure-cli"),
                        ("DATABRICKS_CONFIG_PROFILE", "ci"), ("ARM_ENVIRONMENT", "china")):
        assert DatabricksEngine(environ={**azure, name: value}).key() != azure_key, name


# --- errors -------------------------------------------------------------------------------
def request_error(status, message="Error during request to server: : Invalid access token.. ",
                  reason=": Invalid access token.", original=None):
    return dbexc.RequestError(message, {"http-code": status, "error-message": reason,
                                        "method": "OpenSession"}, None, original or EOFError())


def max_retry_error(reason) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "/sql/1.0/warehouses/abc", reason)


@pytest.mark.parametrize("error,expected", [
    # what the old rules got right, kept
    (dbexc.ServerOperationError(
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found. SQLSTATE: 42P01"),
     QueryError),
    (dbexc.ServerOperationError("[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. "
                                "SQLSTATE: 42601"), QueryError),
    (dbexc.ServerOperationError("[DIVIDE_BY_ZERO] Division by zero. SQLSTATE: 22012"),
     QueryError),
    (dbexc.ServerOperationError("TEMPORARILY_UNAVAILABLE: the warehouse is starting"),
     EngineUnavailable),
    (dbexc.RequestError("Error during request to server: 503 Service Unavailable"),
     EngineUnavailable),
    (dbexc.MaxRetryDurationError("Retry request would exceed Retry policy max retry duration"),
     EngineUnavailable),
    (dbexc.OperationalError("Connection reset by peer"), EngineUnavailable),
    (dbexc.ServerOperationError("Query was cancelled"), TaskTimeout),
    (dbexc.ProgrammingError("Invalid parameter: expected a dict"), QueryError),
    # SQLSTATE first: a column named like a cancel is an SQL error
    (dbexc.ServerOperationError(
        "[UNRESOLVED_COLUMN.WITHOUT_SUGGESTION] A column, variable, or function parameter with "
        "name `cancelled_at` cannot be resolved. SQLSTATE: 42703"), QueryError),
    (dbexc.ServerOperationError("[X] cancelled_at must be a timestamp SQLSTATE: 22007"),
     QueryError),
    (dbexc.DatabaseError("invalid value for cancelled_at"), QueryError),  # no word "cancelled"
    (dbexc.ServerOperationError("[OPERATION_CANCELED] Operation canceled. SQLSTATE: HY008"),
     TaskTimeout),
    (dbexc.ServerOperationError(
        "[DELTA_CONCURRENT_APPEND] Files were added by a concurrent update. SQLSTATE: 40001"),
     EngineUnavailable),
    # how the connector reports a cancelled statement (connector 4.9 against the stand-in)
    (dbexc.DatabaseError("Invalid OperationState: expected state FINISHED, but found CANCELED "
                         "(the statement was canceled)"), TaskTimeout),
    (StatementCancelled("the warehouse reports the statement CANCELED"), TaskTimeout),
    # what passes
    (urllib3.exceptions.MaxRetryError(None, "/sql/1.0/warehouses/abc",
                                      urllib3.exceptions.ResponseError(
                                          "too many 503 error responses")), EngineUnavailable),
    (dbexc.RequestError("Error during request to server. Retry request would exceed Retry "
                        "policy max retry duration of 3.0 seconds", {"http-code": 200}, None,
                        dbexc.MaxRetryDurationError("max retry duration")), EngineUnavailable),
    (dbexc.DatabaseError("Invalid SessionHandle: SessionHandle [01ef-abc]"), EngineUnavailable),
    (dbexc.DatabaseError("Invalid OperationHandle: OperationHandle [opType=EXECUTE_STATEMENT]"),
     EngineUnavailable),
    (dbexc.DataError("Expected results to start from 50000 but they instead start at 100000"),
     EngineUnavailable),
    (ConnectionResetError(104, "Connection reset by peer"), EngineUnavailable),
    (max_retry_error(urllib3.exceptions.NewConnectionError(None, "Connection refused")),
     EngineUnavailable),
    # no retry can fix these
    (request_error(403), EngineNotConfigured),
    (request_error(401, reason="Unauthorized"), EngineNotConfigured),
    (request_error(404, reason="Not Found"), EngineNotConfigured),
    (max_retry_error(urllib3.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")), EngineNotConfigured),
])
def test_errors_are_classified(error, expected):
    classified = DatabricksEngine(environ=ENV).classify(error)
    assert type(classified) is expected, classified
    if expected is not EngineNotConfigured:  # those say what to check instead (below)
        assert str(error).strip() in str(classified)


def test_a_permanent_sqlstate_wins_over_transient_words():
    error = dbexc.ServerOperationError(
        "[UNRESOLVED_COLUMN] column `http_503_count` cannot be resolved. SQLSTATE: 42703")
    assert type(DatabricksEngine(environ=ENV).classify(error)) is QueryError


def test_refused_credentials_name_what_to_check():
    token = DatabricksEngine(environ=ENV).classify(request_error(403))
    assert "HTTP 403: Invalid access token" in str(token) and "DATABRICKS_TOKEN" in str(token)
    oauth = DatabricksEngine(environ=OAUTH_ENV).classify(request_error(403))
    assert "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET" in str(oauth)
    assert "DATABRICKS_TOKEN" not in str(oauth)
    not_found = DatabricksEngine(environ=ENV).classify(request_error(404, reason="Not Found"))
    assert "DATABRICKS_HTTP_PATH" in str(not_found)


def test_credentials_errors():
    engine = DatabricksEngine(environ=OAUTH_ENV)
    refused = CredentialsError("the Databricks SDK gave no credentials for https://x "
                               "(oauth-m2m, client sp-client): invalid_client: Client "
                               "authentication failed", refused=True)
    # as the connector surfaces it: the header factory raised inside its request
    error = engine.classify(dbexc.RequestError("Error during request to server", {}, None, refused))
    assert type(error) is EngineNotConfigured
    assert "invalid_client" in str(error) and "DATABRICKS_CLIENT_SECRET" in str(error)
    down = CredentialsError("the Databricks SDK gave no credentials for https://x: Connection "
                            "refused", refused=False)
    assert type(engine.classify(dbexc.RequestError("x", {}, None, down))) is EngineUnavailable
    assert type(engine.classify(CredentialsError("busy", refused=False))) is EngineUnavailable
    sdk = DatabricksEngine(environ={**{k: v for k, v in ENV.items() if k != "DATABRICKS_TOKEN"},
                                    "DATABRICKS_AUTH_TYPE": "azure-client-secret"})
    unusable = sdk.classify(CredentialsError("cannot configure default credentials",
                                             refused=True))
    assert type(unusable) is EngineNotConfigured
    assert "DATABRICKS_AUTH_TYPE=azure-client-secret" in str(unusable)


def test_sessions_kept_after_a_judged_statement_and_stale_ones_told_apart():
    engine = DatabricksEngine(environ=ENV)

    def query_error(cause):
        error = QueryError("x")
        error.__cause__ = cause
        return error

    assert engine.keeps_connection_after(query_error(dbexc.ServerOperationError(
        "[PARSE_SYNTAX_ERROR] Syntax error. SQLSTATE: 42601")))
    assert engine.keeps_connection_after(query_error(dbexc.ProgrammingError("bad parameter")))
    assert not engine.keeps_connection_after(query_error(dbexc.DatabaseError("what happened?")))
    assert not engine.keeps_connection_after(QueryError("no cause"))
    assert engine.stale_connection(dbexc.DatabaseError("Invalid SessionHandle: SessionHandle [x]"))
    assert not engine.stale_connection(dbexc.DatabaseError("Invalid OperationHandle: [x]"))
    assert not engine.stale_connection(request_error(503))


# --- the connector's retry budget ----------------------------------------------------------
def test_the_retry_budget_names_exist_in_this_connector():
    """bound_retries() sets private attributes of connector 4.9; if an upgrade renames
    them, this fails first (the deadline still holds, the budget would not)."""
    from databricks.sql.auth.retry import DatabricksRetryPolicy
    from databricks.sql.backend.thrift_backend import (
        ThriftDatabricksClient,
        _retry_policy,
    )

    assert "_retry_stop_after_attempts_duration" in _retry_policy
    assert "_retry_stop_after_attempts_duration" in ThriftDatabricksClient.__annotations__
    policy = DatabricksRetryPolicy(delay_min=1, delay_max=5, stop_after_attempts_count=3,
                                   stop_after_attempts_duration=900, delay_default=5,
                                   force_dangerous_codes=[])
    assert policy.stop_after_attempts_duration == 900
    policy.start_retry_timer()  # as the transport does before each request
    policy.command_type = None
    assert policy.new().stop_after_attempts_duration == 900  # carried from retry to retry


def test_the_result_fetch_names_exist_in_this_connector():
    """DatabricksSession._open_result() fetches a finished statement's first page the way
    Cursor.get_async_execution_result() does, without its two extra status polls."""
    import inspect

    from databricks.sql.backend.thrift_backend import ThriftDatabricksClient
    from databricks.sql.client import Cursor

    assert re.search(r"self\.backend\b[^=\n]*=\s*backend\b", inspect.getsource(Cursor.__init__))
    source = "".join(inspect.getsource(Cursor.get_async_execution_result).split())
    assert "self.active_result_set=self.backend.get_execution_result(" in source
    assert list(inspect.signature(ThriftDatabricksClient.get_execution_result).parameters) == [
        "self", "command_id", "cursor"]


def test_bound_retries_sets_what_is_left_of_the_deadline():
    class Policy:
        stop_after_attempts_duration = 900.0

    class Backend:
        _retry_stop_after_attempts_duration = 900.0
        retry_policy = Policy()

    class Connection:
        class session:  # the connector's attribute name
            backend = Backend()

    connection = Connection()
    dbx.bound_retries(connection, time.monotonic() + 12)
    backend = connection.session.backend
    assert 11 < backend._retry_stop_after_attempts_duration <= 12
    assert (backend.retry_policy.stop_after_attempts_duration
            == backend._retry_stop_after_attempts_duration)
    dbx.bound_retries(connection, time.monotonic() - 3)
    assert backend._retry_stop_after_attempts_duration == 1
    dbx.bound_retries(object(), time.monotonic())  # anything else: left alone


# --- the statement's cancel protocol, on a fake cursor ------------------------------------
class FakeCursor:
    """execute_async / get_query_state / cancel as connector 4.9's cursor, scripted."""

    def __init__(self, states, execute_delay=0.0):
        self.calls: list[str] = []
        self.states = list(states)
        self.execute_delay = execute_delay
        self.active_command_id = None
        self.description = None
        self.query_id = None

    def execute_async(self, sql, parameters=None, query_tags=None):
        self.calls.append(f"execute {query_tags}")
        time.sleep(self.execute_delay)
        self.active_command_id = "cmd"

    def get_query_state(self):
        self.calls.append("state")
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        time.sleep(0.02)
        return state

    def cancel(self):
        self.calls.append("cancel" if self.active_command_id else "cancel-lost")

    def close(self):
        self.calls.append("close")


class FakeConnection:
    def __init__(self, cursor):
        self._cursor = cursor

    def cursor(self):
        return self._cursor


def session_on(cursor, task_id="t-1"):
    return DatabricksEngine(environ=ENV).session(FakeConnection(cursor), task_id=task_id,
                                                 deadline=time.monotonic() + 30)


def run_in_thread(session):
    outcome = {}

    def target():
        try:
            outcome["value"] = session.execute("SELECT 1", None)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_the_task_id_goes_with_the_statement_as_a_query_tag():
    cursor = FakeCursor([CommandState.FAILED])
    with pytest.raises(dbexc.OperationalError, match="FAILED"):
        session_on(cursor, task_id="abc-123").execute("SELECT 1", None)
    assert cursor.calls[0] == "execute {'turbo_task_id': 'abc-123'}"


def test_a_cancel_while_it_runs_is_sent_between_two_polls():
    cursor = FakeCursor([CommandState.RUNNING])
    session = session_on(cursor)
    thread, outcome = run_in_thread(session)
    time.sleep(0.3)
    session.cancel()  # only a flag: never waits for the connector's lock
    thread.join(2)
    assert not thread.is_alive()
    assert isinstance(outcome["error"], StatementCancelled)
    assert cursor.calls.count("cancel") == 1 and "cancel-lost" not in cursor.calls
    assert cursor.calls[-1] == "cancel"  # no poll after it


def test_a_cancel_before_the_statement_has_an_id_is_not_lost():
    cursor = FakeCursor([CommandState.RUNNING], execute_delay=0.3)
    session = session_on(cursor)
    thread, outcome = run_in_thread(session)
    time.sleep(0.1)  # ExecuteStatement in flight: no command id yet
    assert cursor.active_command_id is None
    session.cancel()
    thread.join(2)
    assert isinstance(outcome["error"], StatementCancelled)
    assert cursor.calls[1:] == ["cancel"]  # sent the moment ExecuteStatement answered


def test_a_cancel_before_it_starts_submits_nothing():
    cursor = FakeCursor([CommandState.RUNNING])
    session = session_on(cursor)
    session.cancel()
    with pytest.raises(StatementCancelled, match="before it was submitted"):
        session.execute("SELECT 1", None)
    assert cursor.calls == []


def test_a_statement_cancelled_at_the_warehouse_is_reported():
    cursor = FakeCursor([CommandState.RUNNING, CommandState.CANCELLED])
    with pytest.raises(StatementCancelled, match="CANCELED"):
        session_on(cursor).execute("SELECT 1", None)
    assert "cancel" not in cursor.calls


def test_an_sql_error_while_polling_surfaces_as_the_connectors():
    error = dbexc.ServerOperationError("[DIVIDE_BY_ZERO] Division by zero. SQLSTATE: 22012")
    cursor = FakeCursor([CommandState.RUNNING, error])
    with pytest.raises(dbexc.ServerOperationError):
        session_on(cursor).execute("SELECT 1", None)


# --- credentials through the Databricks SDK, against the warehouse stand-in -----------------
CLIENT, SECRET = "sp-turbo", "dose-3c1f9e"


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    wh = start_warehouse(tmp_path_factory.mktemp("standin"), oauth_clients={CLIENT: SECRET})
    yield wh
    wh.stop()


@pytest.fixture
def wh(standin, monkeypatch):
    """The stand-in, its counters reset; this process trusts its CA as a worker would:
    SSL_CERT_FILE only (the engine hands it to the SDK's requests)."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, "unset")  # so that monkeypatch puts back what was there
        monkeypatch.delenv(name)
    monkeypatch.setenv("SSL_CERT_FILE", str(standin.ca_file))
    standin.faults.clear()
    standin.stats.reset()
    return standin


def oauth_engine(wh, secret=SECRET, **env):
    environ = {k: v for k, v in wh.env().items() if k != "DATABRICKS_TOKEN"}
    return DatabricksEngine(environ={**environ, "DATABRICKS_CLIENT_ID": CLIENT,
                                     "DATABRICKS_CLIENT_SECRET": secret, **env})


def select_one(engine) -> list:
    session = engine.open()
    try:
        _, batches = session.execute("SELECT 1 AS one", None)
        return [row for batch in batches for row in batch.to_pylist()]
    finally:
        session.close()


def test_oauth_m2m_through_the_sdk_one_token_for_every_session(wh, caplog):
    caplog.set_level(logging.DEBUG)
    engine = oauth_engine(wh)
    for _ in range(3):  # three sessions (connections) of one engine
        assert select_one(engine) == [{"one": 1}]
    assert [(t["client_id"], t["auth"], t["grant_type"], t["scope"], t["status"])
            for t in wh.stats.token_requests] == [
        (CLIENT, "basic", "client_credentials", "all-apis", 200)]
    assert [d["path"] for d in wh.stats.discovery_requests] == [
        "/.well-known/databricks-config", "/oidc/.well-known/oauth-authorization-server"]
    assert wh.stats.open_session == 3
    assert {r["status"] for r in wh.stats.requests} == {200}
    # the connector trusts SSL_CERT_FILE; the SDK's requests was handed the same file
    assert os.environ["REQUESTS_CA_BUNDLE"] == str(wh.ca_file)
    assert SECRET not in caplog.text


def test_a_refused_client_is_not_configured_without_a_retry(wh, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EngineNotConfigured) as raised:
        oauth_engine(wh, secret="dose-wrong-1").open()
    message = str(raised.value)
    assert re.search(r"invalid_client.*check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET",
                     message), message
    assert CLIENT in message and "dose-wrong-1" not in message
    assert [t["status"] for t in wh.stats.token_requests] == [401]  # asked once
    assert wh.stats.requests == []  # no Thrift request went out without a token
    assert "dose-wrong-1" not in caplog.text


def test_a_failing_token_endpoint_is_unavailable_and_the_next_attempt_gets_one(wh):
    engine = oauth_engine(wh)
    for status, error in ((503, None), (503, "temporarily_unavailable"), (500, "server_error")):
        wh.faults.token_error(status, error=error)
        with pytest.raises(EngineUnavailable, match="the Databricks SDK gave no credentials"):
            engine.open()
    assert select_one(engine) == [{"one": 1}]
    assert [t["status"] for t in wh.stats.token_requests] == [503, 503, 500, 200]


def test_an_unreachable_token_endpoint_is_unavailable(tmp_path, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    wh = start_warehouse(tmp_path, oauth_clients={CLIENT: SECRET},
                         token_endpoint=f"https://127.0.0.1:{port}/oidc/v1/token")
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(wh.ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(wh.ca_file))
        started = time.monotonic()
        with pytest.raises(EngineUnavailable, match="Connection refused") as raised:
            oauth_engine(wh).open()
        assert time.monotonic() - started < 10
        assert SECRET not in str(raised.value)
        assert wh.stats.requests == []
    finally:
        wh.stop()


def test_a_workspace_certificate_the_sdk_does_not_trust_is_unavailable(wh, monkeypatch):
    import certifi

    from tasks.engines.databricks import auth

    monkeypatch.setattr(auth, "SDK_TIMEOUT_S", 1)  # the SDK retries TLS errors that long
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # chosen: not the stand-in's CA
    with pytest.raises(EngineUnavailable, match="REQUESTS_CA_BUNDLE or SSL_CERT_FILE"):
        oauth_engine(wh).open()
    assert os.environ["REQUESTS_CA_BUNDLE"] == certifi.where()  # left as chosen
    assert wh.stats.token_requests == [] and wh.stats.requests == []


def test_settings_the_sdk_cannot_use_are_not_configured(wh, monkeypatch):
    for name in ("ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    environ = {k: v for k, v in wh.env().items() if k != "DATABRICKS_TOKEN"}
    engine = DatabricksEngine(environ={**environ,
                                       "DATABRICKS_AUTH_TYPE": "azure-client-secret"})
    with pytest.raises(EngineNotConfigured, match="DATABRICKS_AUTH_TYPE=azure-client-secret"):
        engine.open()
    assert wh.stats.token_requests == [] and wh.stats.requests == []


def test_ssl_cert_file_goes_to_requests_unless_it_has_a_bundle():
    environ = {"SSL_CERT_FILE": "/etc/ca.pem"}
    trust_ssl_cert_file_in_requests(environ)
    assert environ["REQUESTS_CA_BUNDLE"] == "/etc/ca.pem"
    for chosen in ({"REQUESTS_CA_BUNDLE": "/mine.pem"}, {"CURL_CA_BUNDLE": "/mine.pem"}):
        environ = {"SSL_CERT_FILE": "/etc/ca.pem", **chosen}
        trust_ssl_cert_file_in_requests(environ)
        assert environ == {"SSL_CERT_FILE": "/etc/ca.pem", **chosen}  # theirs is kept
    environ = {}
    trust_ssl_cert_file_in_requests(environ)
    assert environ == {}  # certifi's bundle, as requests does by itself
