"""Fault injection and observation for the warehouse stand-in (see ``warehouse.py``).

``Faults`` is what a test arms at run time, in process (``wh.faults.slow(3)``) or over
HTTP (``POST /_standin/faults`` with ``{"action": "slow", "seconds": 3}``; every method
below is an action, its keyword arguments are the JSON keys). ``Stats`` is what the
server saw; ``Stats.snapshot()`` is the JSON of ``GET /_standin/state``.

Thrift method names are the ``TCLIService`` ones: ``OpenSession``, ``CloseSession``,
``ExecuteStatement``, ``GetOperationStatus``, ``GetResultSetMetadata``, ``FetchResults``,
``CancelOperation``, ``CloseOperation``.
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

# What a SQL warehouse that is starting answers: HTTP 503 with the Thrift error header
# (seen by the Databricks JDBC driver as "Thrift Header: TEMPORARILY_UNAVAILABLE: Cluster
# <id> is temporarily unavailable."; the Python connector gives up with urllib3's "too many
# 503 error responses").
STARTING_MESSAGE = "TEMPORARILY_UNAVAILABLE: Cluster {warehouse_id} is temporarily unavailable."


@dataclass
class HttpFault:
    status: int
    remaining: int
    method: str | None = None        # a Thrift method name, or None for any
    retry_after: float | None = 1
    message: str | None = None       # sent as x-thriftserver-error-message


@dataclass
class DropFault:
    remaining: int
    method: str | None = "ExecuteStatement"
    after_processing: bool = True    # the server acts on the request, then hangs up


@dataclass
class SlowRule:
    seconds: float
    pattern: str | None = None       # re.search on the statement text, case-insensitive
    remaining: int | None = None     # None: every matching statement until cleared


@dataclass
class DelayRule:
    seconds: float
    method: str | None = "OpenSession"  # a Thrift method name, or None for any
    remaining: int | None = 1        # None: every matching request until cleared


@dataclass
class TokenFault:
    status: int
    remaining: int
    error: str | None = None         # an OAuth error code: a JSON body; None: a text body


@dataclass
class Starting:
    until: float
    methods: tuple[str, ...] = ("OpenSession", "ExecuteStatement")
    retry_after: float | None = None
    message: str = STARTING_MESSAGE


class Faults:
    """Armed faults; the server consumes them. Thread-safe."""

    def __init__(self, forget: Callable[[str | None], list[str]] | None = None,
                 warehouse_id: str = "standin") -> None:
        self._lock = threading.Lock()
        self._forget = forget
        self._warehouse_id = warehouse_id
        self.http: list[HttpFault] = []
        self.drops: list[DropFault] = []
        self.slow_rules: list[SlowRule] = []
        self.delays: list[DelayRule] = []
        self.token_errors: list[TokenFault] = []
        self.starting: Starting | None = None

    # ---- arming (also the JSON actions) ---------------------------------------------
    def slow(self, seconds: float, pattern: str | None = None, count: int | None = None) -> None:
        """Statements (all, or those whose text matches ``pattern``) stay RUNNING for
        ``seconds`` before DuckDB runs them; CancelOperation ends the wait at once.
        ``count`` limits it to the next N matching statements."""
        with self._lock:
            self.slow_rules.append(SlowRule(float(seconds), pattern, count))

    def delay(self, seconds: float, method: str | None = "OpenSession",
              count: int | None = 1) -> None:
        """Hold the next ``count`` requests of ``method`` (None: any; ``count`` None: every
        one until cleared) for ``seconds`` before the server acts on them: a slow
        OpenSession (a warehouse that takes its time), a slow FetchResults page."""
        with self._lock:
            self.delays.append(DelayRule(float(seconds), method, count))

    def http_error(self, status: int = 503, count: int = 1, method: str | None = None,
                   retry_after: float | None = 1, message: str | None = None) -> None:
        """Answer the next ``count`` Thrift requests (of ``method`` only, if given) with
        HTTP ``status`` (429, 503, ...) and a ``Retry-After`` header (None: no header)."""
        with self._lock:
            self.http.append(HttpFault(int(status), int(count), method, retry_after, message))

    def warehouse_starting(self, seconds: float,
                           methods: tuple[str, ...] | list[str] = ("OpenSession",
                                                                   "ExecuteStatement"),
                           retry_after: float | None = None, message: str | None = None) -> None:
        """For the next ``seconds``, ``methods`` answer HTTP 503 with
        ``x-thriftserver-error-message: TEMPORARILY_UNAVAILABLE: ...`` as a starting warehouse."""
        with self._lock:
            self.starting = Starting(time.monotonic() + float(seconds), tuple(methods), retry_after,
                                     message or STARTING_MESSAGE)

    def drop_connection(self, count: int = 1, method: str | None = "ExecuteStatement",
                        after_processing: bool = True) -> None:
        """Close the TCP connection without an answer for the next ``count`` requests of
        ``method``. With ``after_processing`` the server first does the work (a statement
        starts running), as when a proxy loses the answer."""
        with self._lock:
            self.drops.append(DropFault(int(count), method, bool(after_processing)))

    def token_error(self, status: int = 503, count: int = 1, error: str | None = None) -> None:
        """Answer the next ``count`` requests to the OAuth token endpoint with HTTP
        ``status``: a JSON ``{"error": error, ...}`` (an OAuth error code such as
        ``invalid_client`` or ``temporarily_unavailable``), or a text body when ``error``
        is None (what a proxy or a failing server sends)."""
        with self._lock:
            self.token_errors.append(TokenFault(int(status), int(count), error))

    def forget_sessions(self, session_id: str | None = None) -> list[str]:
        """Forget one session (hex id as ``connection.get_session_id_hex()``) or all, with
        their operations, as a warehouse restart does: the next request using them gets
        ``Invalid SessionHandle``. Returns the forgotten ids."""
        if self._forget is None:
            raise RuntimeError("no server attached")
        return self._forget(session_id)

    def clear(self) -> None:
        with self._lock:
            self.http.clear()
            self.drops.clear()
            self.slow_rules.clear()
            self.delays.clear()
            self.token_errors.clear()
            self.starting = None

    ACTIONS = ("slow", "delay", "http_error", "warehouse_starting", "drop_connection",
               "token_error", "forget_sessions", "clear")

    def apply(self, spec: dict):
        """Run one JSON action: ``{"action": "http_error", "status": 429, "count": 2}``."""
        spec = dict(spec)
        action = spec.pop("action", None)
        if action not in self.ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; one of {', '.join(self.ACTIONS)}")
        return getattr(self, action)(**spec)

    def snapshot(self) -> dict:
        with self._lock:
            starting = None
            if self.starting and self.starting.until > time.monotonic():
                starting = {"seconds_left": round(self.starting.until - time.monotonic(), 3),
                            "methods": list(self.starting.methods)}
            return {"http": [asdict(f) for f in self.http],
                    "drops": [asdict(f) for f in self.drops],
                    "slow": [asdict(r) for r in self.slow_rules],
                    "delays": [asdict(d) for d in self.delays],
                    "token_errors": [asdict(f) for f in self.token_errors],
                    "starting": starting}

    # ---- consumption (server side) --------------------------------------------------
    def take_http(self, method: str | None) -> tuple[int, dict[str, str]] | None:
        """The HTTP error to answer this request with, if one is armed: (status, headers)."""
        with self._lock:
            start = self.starting
            if start and time.monotonic() < start.until and method in start.methods:
                headers = {"x-thriftserver-error-message":
                           start.message.format(warehouse_id=self._warehouse_id)}
                if start.retry_after is not None:
                    headers["Retry-After"] = _seconds(start.retry_after)
                return 503, headers
            for fault in self.http:
                if fault.remaining > 0 and fault.method in (None, method):
                    fault.remaining -= 1
                    if not fault.remaining:
                        self.http.remove(fault)
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = _seconds(fault.retry_after)
                    if fault.message:
                        headers["x-thriftserver-error-message"] = fault.message
                    return fault.status, headers
        return None

    def take_token_error(self) -> TokenFault | None:
        with self._lock:
            for fault in self.token_errors:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.token_errors.remove(fault)
                return fault
        return None

    def take_drop(self, method: str | None) -> DropFault | None:
        with self._lock:
            for fault in self.drops:
                if fault.remaining > 0 and fault.method in (None, method):
                    fault.remaining -= 1
                    if not fault.remaining:
                        self.drops.remove(fault)
                    return fault
        return None

    def take_delay(self, method: str | None) -> float:
        """Seconds to hold this request before acting on it (0: none armed)."""
        with self._lock:
            for rule in self.delays:
                if rule.method in (None, method):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self.delays.remove(rule)
                    return rule.seconds
        return 0.0

    def slow_seconds(self, statement: str) -> float:
        with self._lock:
            for rule in self.slow_rules:
                if rule.pattern is None or re.search(rule.pattern, statement, re.I | re.S):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self.slow_rules.remove(rule)
                    return rule.seconds
        return 0.0


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Stats:
    """What the stand-in saw. Lists keep everything since start (or ``reset()``).

    ``calls``: Thrift method -> requests that reached the Thrift handler (HTTP errors and
    dropped-before-processing requests excluded; they are in ``requests``).
    ``requests``: one dict per HTTP request: path, thrift method, HTTP status (0: dropped),
    user agent. ``statements``: each ExecuteStatement's text, in order (re-sends included).
    ``executions``: one dict per ExecuteStatement: id, session, statement, parameters,
    conf_overlay, run_async, cloud_fetch (the client may download results), final state.
    ``session_configs``: one dict per OpenSession: configuration, catalog, schema, client
    protocol. ``token_requests``: one dict per POST to the OAuth token endpoint: client id,
    how the client authenticated, grant type, scope, HTTP status. ``discovery_requests``:
    one dict per GET of a discovery document (``/.well-known/databricks-config``,
    ``/oidc/.well-known/oauth-authorization-server``): path, HTTP status.
    """

    calls: Counter = field(default_factory=Counter)
    requests: list = field(default_factory=list)
    user_agents: list = field(default_factory=list)
    statements: list = field(default_factory=list)
    executions: list = field(default_factory=list)
    conf_overlays: list = field(default_factory=list)
    session_configs: list = field(default_factory=list)
    token_requests: list = field(default_factory=list)
    discovery_requests: list = field(default_factory=list)
    live: Callable[[], tuple[list, list]] | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def open_session(self) -> int:
        return self.calls["OpenSession"]

    @property
    def close_session(self) -> int:
        return self.calls["CloseSession"]

    @property
    def execute_statement(self) -> int:
        return self.calls["ExecuteStatement"]

    @property
    def cancel_operation(self) -> int:
        return self.calls["CancelOperation"]

    @property
    def open_sessions(self) -> list[str]:
        """Hex ids of the sessions the server holds now."""
        return self.live()[0] if self.live else []

    @property
    def running_operations(self) -> list[dict]:
        """Operations now PENDING or RUNNING: id, session, statement, state."""
        return self.live()[1] if self.live else []

    def record(self, name: str, item) -> None:
        with self.lock:
            getattr(self, name).append(item)

    def count(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            for name in ("requests", "user_agents", "statements", "executions", "conf_overlays",
                         "session_configs", "token_requests", "discovery_requests"):
                getattr(self, name).clear()

    def snapshot(self) -> dict:
        with self.lock:
            data = {
                "calls": dict(self.calls),
                "requests": list(self.requests),
                "user_agents": list(self.user_agents),
                "statements": list(self.statements),
                "executions": [dict(e) for e in self.executions],
                "conf_overlays": list(self.conf_overlays),
                "session_configs": list(self.session_configs),
                "token_requests": list(self.token_requests),
                "discovery_requests": list(self.discovery_requests),
            }
        data["open_sessions"] = self.open_sessions
        data["running_operations"] = self.running_operations
        return data
