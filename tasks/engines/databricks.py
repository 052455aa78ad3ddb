"""Databricks SQL warehouses through databricks-sql-connector (Thrift over HTTPS).

Configuration comes only from the worker's environment, never from task arguments
(:class:`DatabricksConfig`): ``DATABRICKS_SERVER_HOSTNAME``, ``DATABRICKS_HTTP_PATH``, and
either ``DATABRICKS_TOKEN`` (a personal access token) or ``DATABRICKS_CLIENT_ID`` +
``DATABRICKS_CLIENT_SECRET`` (OAuth machine-to-machine for a service principal,
:class:`ClientCredentials`); optional ``DATABRICKS_PORT``, ``DATABRICKS_CATALOG``,
``DATABRICKS_SCHEMA``, ``DATABRICKS_SESSION_CONF``, ``DATABRICKS_USE_CLOUD_FETCH``,
``DATABRICKS_ENABLE_TELEMETRY``. Every session says ``agent-turbo/<version>`` in its user
agent and every statement carries the Celery task's id as the query tag
``turbo_task_id``: the warehouse's query history leads back to the task.

Sessions (connections) are kept per worker process by ``tasks.engines.pool``: one
statement at a time on each, a fresh cursor per statement; closed when idle or old
(TURBO_SESSION_MAX_IDLE, TURBO_SESSION_MAX_AGE), after 1,000 statements (the connector
keeps every cursor it made), after a timeout or cancel, and after any error but an SQL
error the warehouse judged (``keeps_connection_after``). A pooled session the warehouse
forgot (a restart: ``Invalid SessionHandle``) is replaced at once by the runner
(``stale_connection``): nothing ran on it.

Statements run asynchronously (``execute_async``) and this module polls their state,
so that a cancel never queues behind the connector's own status loop: the connector
holds one request lock per connection for each GetOperationStatus, which the
warehouse long-polls; between two polls here the lock is free. ``cancel()`` only sets
a flag and wakes the poll; the thread running the statement sends CancelOperation as
soon as its current request returns, also when the cancel came before the statement
had an id (it is then cancelled the moment ExecuteStatement answers), and stops
fetching a result between pages.

The connector retries 429/503 (a warehouse starting says ``TEMPORARILY_UNAVAILABLE``)
by itself, sleeping at least ``_retry_delay_max`` (never less than 5 s) per retry. It
is bounded here so that it can never outlast the call's deadline: 5 s between retries,
at most ``RETRY_ATTEMPTS`` of them, and a duration budget of what is left of the
deadline, set again before each request; past that it gives up and the error becomes
:class:`EngineUnavailable`, which the Celery task retries with the project's backoff.

Errors (:meth:`DatabricksEngine.classify`): refused credentials (HTTP 401/403, an OAuth
token endpoint's refusal) are :class:`EngineNotConfigured`, never retried; then an
SQLSTATE decides (class 42/22/... permanent: :class:`QueryError`; ``HY008``: cancelled);
then a cancelled statement (:class:`TaskTimeout`), then what passes (transport errors,
429/503, a starting warehouse, a forgotten session, a lost result page:
:class:`EngineUnavailable`); anything else is a :class:`QueryError`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

import pyarrow as pa

from ..errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout
from .base import Engine, Params, Session
from .pool import Policy

log = logging.getLogger(__name__)

FETCH_ROWS = 100_000
MAX_STATEMENTS_PER_SESSION = 1000
QUERY_TAG = "turbo_task_id"  # the statement's query tag naming the Celery task

# Polling the state of a running statement: first after 50 ms, then doubling up to
# 0.5 s. The warehouse long-polls each request (it answers at once on a change), so
# the pause only matters for a statement that keeps running.
POLL_FIRST_S = 0.05
POLL_MAX_S = 0.5

# The connector's own 429/503 retry (see the module docstring).
RETRY_DELAY_MAX_S = 5.0  # the connector refuses less: every retry sleeps at least this
RETRY_ATTEMPTS = 3
MIN_RETRY_BUDGET_S = 1.0  # the connector refuses less

OAUTH_TOKEN_PATH = "/oidc/v1/token"  # a workspace's OAuth token endpoint
OAUTH_SCOPE = "all-apis"  # what the Databricks SDK asks for a service principal
OAUTH_TIMEOUT_S = 15.0
OAUTH_EARLY_REFRESH_S = 60.0  # a token is renewed this long before it expires

_SQLSTATE = re.compile(r"SQLSTATE:?\s*([0-9A-Z]{5})")
# SQLSTATE classes that no retry can fix: syntax/access (42), data (22),
# cardinality (21), constraints (23), invalid transaction/cursor (24/25/2D), feature (0A),
# protocol violation (08P).
_PERMANENT_CLASSES = {"42", "22", "21", "23", "24", "25", "2D", "0A", "08P"}
# ...and those that pass: connection exception (08, but 08P), transaction rollback /
# serialization failure (40), insufficient resources (53), operator intervention (57).
_TRANSIENT_CLASSES = {"08", "40", "53", "57"}
_CANCELLED_STATE = "HY008"  # "operation canceled" (ODBC; the stand-in reports it too)
# A cancelled statement in words: "canceled"/"cancelled" as a word of its own, not a part
# of a name such as `cancelled_at` (SQLSTATE is looked at first in any case).
_CANCELLED = re.compile(r"(?<![\w`'\"])cancell?ed(?![\w`'\"])", re.I)
_TRANSIENT = re.compile(
    r"temporarily[_ ]unavailable|is starting|resource_exhausted|too many requests"
    r"|service unavailable|connection (?:reset|refused|aborted)|timed out"
    r"|invalid sessionhandle|invalid operationhandle|unexpectedly closed server side"
    r"|expected results to start from|\b(?:429|503)\b", re.I)
_STALE_SESSION = re.compile(r"invalid sessionhandle", re.I)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_CONF_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_TIMESTAMP_AS_STRING = "spark.thriftserver.arrowBasedRowSet.timestampAsString"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agent-turbo")
    except Exception:  # noqa: BLE001 - not installed (a source checkout on sys.path)
        return "0"


USER_AGENT = f"agent-turbo/{_version()}"  # added to the connector's User-Agent


class StatementCancelled(Exception):
    """The statement was cancelled: on request (a timeout, a revoke) or at the warehouse."""


class OAuthError(Exception):
    """The OAuth token endpoint gave no token; ``status`` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def refused(self) -> bool:
        """The credentials were refused (no retry can help), not the endpoint unreachable."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


# --- configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class DatabricksConfig:
    """The engine's settings, read from the worker's environment (:meth:`from_environ`)."""

    hostname: str
    http_path: str
    port: int = 443
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    catalog: str | None = None
    schema: str | None = None
    session_conf: Mapping[str, str] = field(default_factory=dict)
    use_cloud_fetch: bool = True
    enable_telemetry: bool = False

    @property
    def oauth(self) -> bool:
        return self.token is None

    @property
    def credential_names(self) -> str:
        """What to check when the warehouse refuses the credentials."""
        if self.oauth:
            return ("DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (the OAuth client of a "
                    "service principal)")
        return "DATABRICKS_TOKEN"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DatabricksConfig:
        def get(name: str) -> str | None:
            value = (environ.get(name) or "").strip()
            return value or None

        hostname, http_path = get("DATABRICKS_SERVER_HOSTNAME"), get("DATABRICKS_HTTP_PATH")
        token = get("DATABRICKS_TOKEN")
        client_id, client_secret = get("DATABRICKS_CLIENT_ID"), get("DATABRICKS_CLIENT_SECRET")
        missing = [name for name, value in (("DATABRICKS_SERVER_HOSTNAME", hostname),
                                            ("DATABRICKS_HTTP_PATH", http_path)) if not value]
        if token and (client_id or client_secret):
            raise EngineNotConfigured(
                "databricks engine: set either DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID + "
                "DATABRICKS_CLIENT_SECRET (OAuth M2M) in the worker's environment, not both")
        if not token:
            if client_id or client_secret:
                missing += [name for name, value in (("DATABRICKS_CLIENT_ID", client_id),
                                                     ("DATABRICKS_CLIENT_SECRET", client_secret))
                            if not value]
            else:
                missing.append("DATABRICKS_TOKEN (or DATABRICKS_CLIENT_ID + "
                               "DATABRICKS_CLIENT_SECRET for OAuth M2M)")
        if missing:
            raise EngineNotConfigured(
                "databricks engine is not configured on this worker: set "
                + ", ".join(missing) + " in the worker's environment")
        hostname = re.sub(r"^https?://", "", hostname).rstrip("/")
        if ":" in hostname or "/" in hostname:
            raise EngineNotConfigured(
                f"DATABRICKS_SERVER_HOSTNAME={hostname!r}: give the host name alone "
                "(e.g. adb-123.4.azuredatabricks.net); a port goes in DATABRICKS_PORT")
        port_text = get("DATABRICKS_PORT") or "443"
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise EngineNotConfigured(
                f"DATABRICKS_PORT={port_text!r} is not a TCP port (1-65535)") from None
        return cls(hostname=hostname, http_path=http_path, port=port, token=token,
                   client_id=None if token else client_id,
                   client_secret=None if token else client_secret,
                   catalog=get("DATABRICKS_CATALOG"), schema=get("DATABRICKS_SCHEMA"),
                   session_conf=parse_session_conf(get("DATABRICKS_SESSION_CONF")),
                   use_cloud_fetch=_flag(environ, "DATABRICKS_USE_CLOUD_FETCH", True),
                   enable_telemetry=_flag(environ, "DATABRICKS_ENABLE_TELEMETRY", False))


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = (environ.get(name) or "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EngineNotConfigured(f"{name}={environ.get(name)!r} is not a boolean: use true or false")


def parse_session_conf(text: str | None) -> dict[str, str]:
    """``DATABRICKS_SESSION_CONF``: ``key=value`` pairs separated by commas
    (``ansi_mode=true,timezone=UTC``; spaces around keys and values are dropped, a
    value may contain ``=``); the session's Spark configuration at the warehouse."""
    conf: dict[str, str] = {}
    if not text or not text.strip():
        return conf
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _CONF_KEY.match(key):
            raise EngineNotConfigured(
                f"DATABRICKS_SESSION_CONF: {item.strip()!r} is not key=value; write "
                "key=value pairs separated by commas, e.g. ansi_mode=true,timezone=UTC")
        if key in conf:
            raise EngineNotConfigured(f"DATABRICKS_SESSION_CONF sets {key!r} twice")
        if key.lower() == _TIMESTAMP_AS_STRING.lower() and value.lower() != "false":
            raise EngineNotConfigured(
                f"DATABRICKS_SESSION_CONF: the connector requires {_TIMESTAMP_AS_STRING}=false")
        conf[key] = value
    return conf


# --- OAuth machine-to-machine ------------------------------------------------------------
class ClientCredentials:
    """OAuth M2M for a Databricks service principal, as the connector's
    ``credentials_provider``: the client-credentials grant at the workspace's token
    endpoint (``https://<host>/oidc/v1/token``, the client authenticated with HTTP Basic,
    scope ``all-apis``: what the Databricks SDK's ``oauth_service_principal`` sends), the
    token kept until a minute before it expires. The connector asks for headers before
    each request (and caches the token itself until its ``exp``).

    The connector alone has no provider for Databricks-managed service principals (its
    ``auth_type="azure-sp-m2m"`` is Microsoft Entra's); its documentation points at the
    databricks-sdk, which this makes unnecessary. TLS trust is the process's default
    (``SSL_CERT_FILE`` is honoured), proxies come from ``HTTPS_PROXY`` as for urllib.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str,
                 timeout: float = OAUTH_TIMEOUT_S) -> None:
        self.token_url, self.client_id = token_url, client_id
        self._secret, self._timeout = client_secret, timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.fetched = 0  # tokens fetched (for tests and logs)

    def auth_type(self) -> str:
        return "oauth-m2m"

    def __call__(self, *args, **kwargs):
        return self.headers

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, expires_in = self._fetch()
                self._renew_at = time.monotonic() + max(0.0, expires_in - OAUTH_EARLY_REFRESH_S)
                self.fetched += 1
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urlencode({"grant_type": "client_credentials", "scope": OAUTH_SCOPE}).encode()
        basic = base64.b64encode(f"{self.client_id}:{self._secret}".encode()).decode()
        request = urllib.request.Request(
            self.token_url, data=body, method="POST",
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded",
                     "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout,
                                        context=ssl.create_default_context()) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise OAuthError(
                f"the OAuth token endpoint {self.token_url} refused client {self.client_id}: "
                f"HTTP {exc.code} {_oauth_detail(exc)}".rstrip(), status=exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OAuthError(f"no OAuth token from {self.token_url}: {exc}") from None
        token = data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise OAuthError(f"the OAuth token endpoint {self.token_url} answered no access_token")
        try:
            expires_in = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in


def _oauth_detail(error: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        return error.reason or ""
    if not isinstance(data, dict):
        return ""
    return " ".join(str(data[k]) for k in ("error", "error_description") if data.get(k))


# --- one statement -----------------------------------------------------------------------
def bound_retries(connection, deadline: float | None) -> None:
    """Give the connector's 429/503 retry of ``connection`` what is left until ``deadline``
    (at least the connector's 1 s): set before each request, since a pooled connection
    outlives the call that opened it. Private names of connector 4.9
    (``tests/unit/test_databricks_engine.py`` checks them); without them the call's
    deadline still stops the statement, only later."""
    if deadline is None:
        return
    budget = max(MIN_RETRY_BUDGET_S, deadline - time.monotonic())
    backend = getattr(getattr(connection, "session", None), "backend", None)
    if backend is None:
        return
    if hasattr(backend, "_retry_stop_after_attempts_duration"):
        backend._retry_stop_after_attempts_duration = budget
    policy = getattr(backend, "retry_policy", None)
    if policy is not None and hasattr(policy, "stop_after_attempts_duration"):
        policy.stop_after_attempts_duration = budget


class DatabricksSession(Session):
    """One statement on a pooled connection: its own cursor, run asynchronously and polled
    here (see the module docstring); ``cancel()`` may come from any thread at any time."""

    def __init__(self, connection, engine: DatabricksEngine, *, deadline: float | None = None,
                 task_id: str | None = None) -> None:
        self._connection = connection
        self._cursor = connection.cursor()
        self._engine = engine
        self._deadline = deadline
        self._tags = {QUERY_TAG: str(task_id)} if task_id else None
        self._stop = threading.Event()
        self._cancel_sent = False
        self._failed = False  # the warehouse ran it and reported an error

    def execute(self, sql: str, params: Params):
        from databricks.sql import exc as dbexc

        cursor = self._cursor
        self._check_stop("before it was submitted")
        self._bound()
        cursor.execute_async(sql, parameters=params, query_tags=self._tags)
        try:
            self._wait()
        except dbexc.ServerOperationError:
            self._failed = True
            raise
        self._check_stop("when it finished")
        self._bound()
        self._open_result()
        if cursor.description is None:
            return None, iter(())
        first = cursor.fetchmany_arrow(FETCH_ROWS)
        return first.schema, self._batches(first)

    def _wait(self) -> None:
        from databricks.sql.backend.types import CommandState

        cursor, pause = self._cursor, POLL_FIRST_S
        while True:
            self._check_stop("while it ran")
            self._bound()
            state = cursor.get_query_state()  # an ERROR_STATE raises ServerOperationError
            if state == CommandState.SUCCEEDED:
                return
            if state == CommandState.CANCELLED:
                raise StatementCancelled("the warehouse reports the statement CANCELED")
            if state not in (CommandState.PENDING, CommandState.RUNNING):
                from databricks.sql.exc import OperationalError

                raise OperationalError(f"the statement ended in state {state.value}")
            self._stop.wait(pause)  # a cancel ends the pause at once
            pause = min(pause * 2, POLL_MAX_S)

    def _open_result(self) -> None:
        """The finished statement's result set (its schema and first page): one
        FetchResults. ``get_async_execution_result()`` does the same after two more
        GetOperationStatus round trips, which the poll above has made already."""
        cursor = self._cursor
        backend = getattr(cursor, "backend", None)
        if backend is None or not hasattr(backend, "get_execution_result"):
            cursor.get_async_execution_result()
            return
        cursor.active_result_set = backend.get_execution_result(cursor.active_command_id, cursor)

    def _batches(self, first: pa.Table) -> Iterator[pa.RecordBatch]:
        table = first
        while table.num_rows:
            yield from table.to_batches()
            self._check_stop("while its result was fetched")
            self._bound()
            table = self._cursor.fetchmany_arrow(FETCH_ROWS)

    def _bound(self) -> None:
        bound_retries(self._connection, self._deadline)

    def _check_stop(self, when: str) -> None:
        """In the statement's thread: once cancelled, cancel at the warehouse and stop."""
        if not self._stop.is_set():
            return
        if self._cursor.active_command_id is not None and not self._cancel_sent:
            self._cancel_sent = True
            try:
                self._cursor.cancel()  # CancelOperation
            except Exception:
                log.warning("cancelling the databricks statement %s failed", self.statement_id,
                            exc_info=True)
        raise StatementCancelled(f"cancelled on request {when}")

    def cancel(self) -> None:
        self._stop.set()  # the statement's thread acts on it between two requests

    def close(self) -> None:
        cursor = self._cursor
        try:
            command = cursor.active_command_id
            if self._failed and command is not None and getattr(cursor, "backend", None):
                cursor.backend.close_command(command)  # no result set left to close it
        except Exception:
            log.debug("closing the failed databricks statement failed", exc_info=True)
        finally:
            cursor.close()  # the connection stays open: the engine's pool closes it

    @property
    def statement_id(self) -> str | None:
        return getattr(self._cursor, "query_id", None)


# --- the engine --------------------------------------------------------------------------
class DatabricksEngine(Engine):
    name = "databricks"
    remote = True
    statement_ids = True  # its sessions know the warehouse's statement id

    def __init__(self, environ: Mapping[str, str] | None = None,
                 policy: Policy = Policy()) -> None:
        self._environ = os.environ if environ is None else environ
        self.policy = policy if policy.max_uses else replace(
            policy, max_uses=MAX_STATEMENTS_PER_SESSION)
        self._credentials: tuple[tuple, ClientCredentials] | None = None
        self._credentials_lock = threading.Lock()

    def key(self):
        """Workspace, warehouse and every setting of the session, with a digest of the
        credentials (never a secret); no error while unconfigured."""
        get = self._environ.get
        secret = get("DATABRICKS_TOKEN") or (
            f"{get('DATABRICKS_CLIENT_ID')}:{get('DATABRICKS_CLIENT_SECRET')}"
            if get("DATABRICKS_CLIENT_ID") or get("DATABRICKS_CLIENT_SECRET") else None)
        digest = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else None
        return (self.name, get("DATABRICKS_SERVER_HOSTNAME"), get("DATABRICKS_PORT"),
                get("DATABRICKS_HTTP_PATH"), digest, get("DATABRICKS_CATALOG"),
                get("DATABRICKS_SCHEMA"), get("DATABRICKS_SESSION_CONF"),
                get("DATABRICKS_USE_CLOUD_FETCH"), get("DATABRICKS_ENABLE_TELEMETRY"))

    def config(self) -> DatabricksConfig:
        return DatabricksConfig.from_environ(self._environ)

    def credentials(self, config: DatabricksConfig) -> ClientCredentials:
        """The OAuth client of ``config``, one per engine (its token is shared by the
        process's sessions)."""
        ident = (config.hostname, config.port, config.client_id, config.client_secret)
        with self._credentials_lock:
            if self._credentials is None or self._credentials[0] != ident:
                port = "" if config.port == 443 else f":{config.port}"
                url = f"https://{config.hostname}{port}{OAUTH_TOKEN_PATH}"
                self._credentials = (ident, ClientCredentials(url, config.client_id,
                                                              config.client_secret))
            return self._credentials[1]

    def connect_args(self, deadline: float | None = None) -> dict:
        """``databricks.sql.connect`` keyword arguments (secrets included: never log them)."""
        config = self.config()
        args: dict = {
            "server_hostname": config.hostname,
            "http_path": config.http_path,
            "_port": config.port,
            "user_agent_entry": USER_AGENT,
            "use_cloud_fetch": config.use_cloud_fetch,
            "enable_telemetry": config.enable_telemetry,
            "_retry_delay_max": RETRY_DELAY_MAX_S,
            "_retry_stop_after_attempts_count": RETRY_ATTEMPTS,
        }
        if config.oauth:
            args["credentials_provider"] = self.credentials(config)
        else:
            args["access_token"] = config.token
        if deadline is not None:
            args["_retry_stop_after_attempts_duration"] = max(
                MIN_RETRY_BUDGET_S, deadline - time.monotonic())
        if config.catalog:
            args["catalog"] = config.catalog
        if config.schema:
            args["schema"] = config.schema
        if config.session_conf:
            args["session_configuration"] = dict(config.session_conf)
        return args

    def connect(self, deadline: float | None = None):
        args = self.connect_args(deadline)
        from databricks import sql as dbsql  # heavy import, worker side only

        try:
            return dbsql.connect(**args)
        except Exception as exc:
            raise self.classify(exc) from exc

    def session(self, connection, *, deadline: float | None = None,
                task_id: str | None = None) -> DatabricksSession:
        return DatabricksSession(connection, self, deadline=deadline, task_id=task_id)

    def healthy(self, connection) -> bool:
        return bool(getattr(connection, "open", True))  # a local flag, no round trip

    def keeps_connection_after(self, error: BaseException) -> bool:
        """The warehouse judged the statement (an SQL error with its SQLSTATE) or the
        connector refused its parameters before sending it: the session is as good as
        before."""
        from databricks.sql import exc as dbexc

        cause = error.__cause__
        if isinstance(cause, dbexc.ServerOperationError):
            return _sqlstate(str(cause)) is not None
        return isinstance(cause, (dbexc.ProgrammingError, dbexc.NotSupportedError))

    def stale_connection(self, exc: BaseException) -> bool:
        """The warehouse no longer knows this session (restarted, idle too long): the
        statement never started; a new session can run it (``tasks.sql``)."""
        return any(_STALE_SESSION.search(_text(e)) for e in _chain(exc))

    # --- errors ----------------------------------------------------------------------
    def classify(self, exc: BaseException) -> Exception:
        from databricks.sql import exc as dbexc

        chain = list(_chain(exc))
        message = _text(exc) or type(exc).__name__

        # 1. our own cancel, or the warehouse's CANCELED state
        if any(isinstance(e, StatementCancelled) for e in chain):
            return TaskTimeout(f"databricks statement cancelled: {message}")

        # 2. credentials: never retried
        oauth = next((e for e in chain if isinstance(e, OAuthError)), None)
        if oauth is not None:
            if oauth.refused:
                return EngineNotConfigured(
                    f"databricks: {oauth}; check DATABRICKS_CLIENT_ID and "
                    "DATABRICKS_CLIENT_SECRET on this worker (the service principal's OAuth "
                    "secret, not expired, of this workspace)")
            return EngineUnavailable(f"databricks unavailable: {oauth}")
        status = _http_status(exc)
        if status in (401, 403):
            return EngineNotConfigured(
                f"databricks refused the credentials (HTTP {status}{_reason(exc)}): check "
                f"{self._credential_names()} on this worker (expired or revoked? of this "
                "workspace? allowed to use this warehouse?)")

        # 3. an SQLSTATE decides before any word of the message
        sqlstate = next(filter(None, (_sqlstate(_text(e)) for e in chain)), None)
        if sqlstate:
            if sqlstate == _CANCELLED_STATE:
                return TaskTimeout(f"databricks statement cancelled: {message}")
            if sqlstate[:2] in _PERMANENT_CLASSES or sqlstate[:3] in _PERMANENT_CLASSES:
                return QueryError(f"databricks [{sqlstate}]: {message}")
            if sqlstate[:2] in _TRANSIENT_CLASSES:
                return EngineUnavailable(f"databricks unavailable [{sqlstate}]: {message}")

        # 4. a cancelled statement, told in words
        if isinstance(exc, dbexc.DatabaseError) and _CANCELLED.search(message):
            return TaskTimeout(f"databricks statement cancelled: {message}")

        # 5. what passes: the wire, the warehouse's state
        if status in (400, 404) and not any(isinstance(e, dbexc.MaxRetryDurationError)
                                            for e in chain):
            return EngineNotConfigured(
                f"databricks answered HTTP {status}{_reason(exc)}: check "
                "DATABRICKS_SERVER_HOSTNAME, DATABRICKS_PORT and DATABRICKS_HTTP_PATH")
        tls = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)
                    or "CERTIFICATE_VERIFY_FAILED" in _text(e)), None)
        if tls is not None:
            return EngineNotConfigured(
                f"databricks: the warehouse's TLS certificate was not trusted ({_text(tls)}): "
                "check DATABRICKS_SERVER_HOSTNAME, and SSL_CERT_FILE behind a proxy")
        if isinstance(exc, dbexc.UnsafeToRetryError):
            return QueryError(f"databricks: {message}")
        if any(isinstance(e, dbexc.MaxRetryDurationError) for e in chain):
            return EngineUnavailable(
                "databricks unavailable (busy, starting or unreachable; the connector's next "
                f"retry would have outlasted the call's deadline): {message}")
        if isinstance(exc, (dbexc.RequestError, dbexc.OperationalError)):
            return EngineUnavailable(f"databricks unavailable: {message}")
        if any(_is_transport_error(e) for e in chain):
            return EngineUnavailable(f"databricks unavailable: {message}")
        if _TRANSIENT.search(message):
            return EngineUnavailable(f"databricks unavailable: {message}")
        return QueryError(f"databricks: {message}")

    def _credential_names(self) -> str:
        try:
            return self.config().credential_names
        except EngineNotConfigured:
            return "DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET"


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, the exceptions it carries (the connector puts the original one in
    ``args[1]``) and its causes, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.append(getattr(current, "reason", None) if isinstance(
            getattr(current, "reason", None), BaseException) else None)
        todo.extend((current.__cause__, current.__context__))


def _text(exc: BaseException) -> str:
    try:
        return str(exc).strip()
    except Exception:  # noqa: BLE001 - a __str__ that fails: the type names it
        return type(exc).__name__


def _sqlstate(message: str) -> str | None:
    found = _SQLSTATE.search(message)
    return found.group(1) if found else None


def _http_status(exc: BaseException) -> int | None:
    context = getattr(exc, "context", None)
    code = context.get("http-code") if isinstance(context, dict) else None
    return code if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    context = getattr(exc, "context", None)
    reason = context.get("error-message") if isinstance(context, dict) else None
    reason = (reason or "").strip(" :")
    return f": {reason}" if reason else ""


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, EOFError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLCertVerificationError):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("urllib3", "http.client", "thrift"))
