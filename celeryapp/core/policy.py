"""The request policy: what a caller may ask of a task, and the Celery options it becomes.

One implementation for ``TurboTask.apply_async`` (``delay()``), the flow engine and
the ``turbo`` shell client: queue names, hosts, priorities, timeouts and the time
limits behind them, retries, completion notices. Standard library only (the shell
path imports it); the limits come in as values, not as the pydantic settings.
"""
from __future__ import annotations

import math

from .errors import InvalidRequest
from .names import (
    AGENT_QUEUE,
    AGENT_TASK,
    CPU_ROLE,
    DEFAULT_MAX_ARGS_BYTES,
    DEFAULT_MAX_SQL_BYTES,
    DEFAULT_PRIORITY,
    ENGINES,
    IO_ROLE,
    NOTIFY_HEADER,
    PRIORITIES,
    QUERY_QUEUE,
    QUERY_TASK,
    QUEUE_SEP,
    REMOTE_ENGINES,
    WAREHOUSE_QUEUE,
    host_queue,
)

ROUTING_KWARGS = ("priority", "queue")
"""Options a caller may give next to task arguments: ``delay(sql, priority="high")``
(``host="alpha"`` too: the queue only that host consumes)."""


class Limits:
    """The timeout policy of one kind of task (queries, agent runs)."""

    __slots__ = ("default_timeout", "max_timeout", "grace", "max_setting", "default_priority",
                 "max_args_bytes", "max_sql_bytes")

    def __init__(self, default_timeout: float, max_timeout: float, grace: float,
                 max_setting: str, default_priority: str = DEFAULT_PRIORITY,
                 max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES,
                 max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES):
        self.default_timeout = float(default_timeout)
        self.max_timeout = float(max_timeout)
        self.grace = float(grace)
        self.max_setting = max_setting  # named in the error, e.g. TURBO_QUERY_MAX_TIMEOUT
        self.default_priority = default_priority
        self.max_args_bytes = int(max_args_bytes)  # TURBO_MAX_ARGS_BYTES
        self.max_sql_bytes = int(max_sql_bytes)  # TURBO_MAX_SQL_BYTES


def check_queue_name(name: str) -> str:
    """Refuse queue names kombu's Redis transport would misread (":" is its priority
    separator here: "a:b" at priority 0 would be read back as queue "a")."""
    if not isinstance(name, str) or not name or QUEUE_SEP in name or any(c.isspace() for c in name):
        raise ValueError(f"queue name must be non-empty, without {QUEUE_SEP!r} or spaces, "
                         f"got {name!r}")
    return name


def priority_value(priority: str | int | None, default: str = DEFAULT_PRIORITY) -> int:
    """Turn ``critical|high|normal|low`` (or a raw 0-9) into a Redis priority."""
    if priority is None:
        return PRIORITIES[default]
    if isinstance(priority, bool):
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 9:
            raise ValueError(f"numeric priority must be 0..9 (0 first), got {priority}")
        return priority
    try:
        return PRIORITIES[str(priority).lower()]
    except KeyError:
        raise ValueError(
            f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}") from None


def check_timeout(timeout, limits: Limits, label: str = "timeout", where: str = "") -> float:
    """The call's timeout in seconds - the caller's budget for the whole call, every
    attempt and the pauses between retries included: the default, or a positive number
    within the maximum. ``label``/``where`` name the option in the error (``--timeout``,
    " for a query")."""
    if timeout is None:
        return limits.default_timeout
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or timeout <= 0):
        raise ValueError(f"{label} must be a positive number of seconds, got {timeout!r}")
    if timeout > limits.max_timeout:
        raise ValueError(f"{label} {timeout:g}s exceeds the maximum of "
                         f"{limits.max_timeout:g}s{where} ({limits.max_setting})")
    return float(timeout)


def check_engine(engine) -> None:
    """A query's engine, when named, must be one the workers have."""
    if engine is not None and engine not in ENGINES:
        raise InvalidRequest(f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}")


def check_sql(sql, limit: int, label: str = "SQL") -> None:
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest(f"{label} must be a non-empty string, got {type(sql).__name__}")
    size = len(sql.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidRequest(f"{label} is {size:,} bytes; the limit is {limit:,} bytes "
                             f"(TURBO_MAX_SQL_BYTES)")


def encoded_size(args, kwargs) -> int:
    """Bytes of a task's arguments as the JSON message body carries them."""
    import json  # here: the shell's start-up path imports this module

    try:
        return len(json.dumps([list(args or ()), dict(kwargs or {})], allow_nan=False,
                              separators=(",", ":"), default=_unencodable).encode())
    except ValueError as exc:  # NaN / Infinity: not JSON, and no sane parameter
        raise InvalidRequest(f"arguments must be finite numbers and JSON values ({exc})") \
            from None


def _unencodable(value):
    raise InvalidRequest(f"argument of type {type(value).__name__} cannot travel as JSON: "
                         f"{str(value)[:80]!r}")


def check_args_size(args, kwargs, limit: int) -> None:
    size = encoded_size(args, kwargs)
    if size > limit:
        raise InvalidRequest(f"the task's arguments are {size:,} bytes encoded; the limit is "
                             f"{limit:,} bytes (TURBO_MAX_ARGS_BYTES)")


def check_query(args, kwargs, limits: Limits) -> None:
    """``turbo.query``'s own arguments: SQL text within its limit, a known engine."""
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    if args or "sql" in kwargs:  # (routing alone may ask without the statement)
        check_sql(args[0] if args else kwargs["sql"], limits.max_sql_bytes)
    check_engine(query_engine(args, kwargs))


def time_limits(timeout: float, grace: float) -> tuple[float, float]:
    """(soft, hard) Celery limits of each message of a call with ``timeout`` seconds (an
    attempt's own deadline is what is left of that, never more)."""
    soft = timeout + grace
    return soft, soft + grace


def check_retries(retries) -> int | None:
    if retries is None:
        return None
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidRequest(f"retries must be a whole number >= 0, got {retries!r}")
    return retries


def check_notify(spec) -> dict:
    """``{"webhook": "https://...", "dir": "/path"}`` with at least one of them."""
    from collections.abc import Mapping  # here: `collections` costs the shell path 2 ms

    if not isinstance(spec, Mapping) or not (spec.get("webhook") or spec.get("dir")):
        raise ValueError("notify must be a mapping with 'webhook' (http(s) URL) and/or 'dir'")
    unknown = set(spec) - {"webhook", "dir"}
    if unknown:
        raise ValueError(f"notify: unknown field(s) {', '.join(sorted(unknown))}")
    webhook = spec.get("webhook")
    if webhook and not str(webhook).startswith(("http://", "https://")):
        raise ValueError(f"notify.webhook must be an http(s) URL, got {webhook!r}")
    return {key: str(value) for key, value in spec.items() if value}


# --- routing: which worker of a host runs what -------------------------------------------
EXPLICIT_DESTINATION = ("queue", "exchange", "routing_key")


def query_engine(args=(), kwargs=None, default: str | None = None) -> str | None:
    """The engine a ``turbo.query`` call names (``engine=``, or the third positional
    argument: ``run_query(sql, params, engine)``), else ``default``."""
    engine = (kwargs or {}).get("engine")
    if engine is None and args and len(args) > 2:
        engine = args[2]
    return engine if engine is not None else default


def role_for(task: str | None, engine: str | None = None) -> str:
    """The worker role that runs ``task``: a query on a local engine (DuckDB) uses the
    CPU and runs on the prefork worker; everything else waits on I/O (agent CLIs,
    remote warehouses, webhooks, Redis) and runs on the io worker's threads.
    Unknown tasks count as I/O: the io worker consumes ``default``."""
    if task == QUERY_TASK and engine not in REMOTE_ENGINES:
        return CPU_ROLE
    return IO_ROLE


def route(task: str | None, engine: str | None = None, host: str | None = None) -> str | None:
    """The queue of one call by what it does, or None (Celery's default routing).

    ``turbo.query``: ``queries`` (DuckDB), ``warehouse`` (a remote engine: Databricks);
    ``turbo.agent``: ``agents``. With ``host``: that host's queue of the right worker,
    ``host.<name>`` (prefork: local queries) or ``host.<name>.io`` (the rest).
    """
    role = role_for(task, engine)
    if host is not None:
        return host_queue(host, role)
    if task == QUERY_TASK:
        return QUERY_QUEUE if role == CPU_ROLE else WAREHOUSE_QUEUE
    if task == AGENT_TASK:
        return AGENT_QUEUE
    return None


def call_options(kwargs: dict | None, options: dict, limits: Limits, *,
                 task: str | None = None, args=(),
                 default_engine: str | None = None) -> tuple[dict, dict]:
    """(task kwargs, Celery options) for one call, checked; raises :class:`InvalidRequest`.

    Routing options given among the task's kwargs (``priority``, ``queue``, ``host``,
    ``notify``) move to the options; ``timeout`` stays for the task (its budget for the
    whole call, retries included: each attempt's runner gets what is left as its
    deadline) and sets the soft (timeout + grace) and hard (soft + grace) Celery limits of
    each message, the backstop of every attempt.
    With ``task`` (its name), a call without an explicit destination (``queue``,
    ``exchange``/``routing_key``) is routed by :func:`route`: a query's engine
    (``args``/``kwargs``, else ``default_engine``) picks ``queries`` or ``warehouse``,
    ``host`` picks the right worker of that host. An explicit ``queue`` wins.
    """
    kwargs = dict(kwargs or {})
    options = dict(options)
    if task == QUERY_TASK:
        check_query(args, kwargs, limits)
    for name in ROUTING_KWARGS:
        if name in kwargs:
            options.setdefault(name, kwargs.pop(name))
    host = kwargs.pop("host", None)
    if host is None:
        host = options.pop("host", None)
    else:
        options.pop("host", None)
    if host is not None:
        if options.get("queue"):
            raise InvalidRequest("give queue or host, not both")
        options["queue"] = (route(task, query_engine(args, kwargs, default_engine), host)
                            if task else host_queue(host))
    elif task and not any(options.get(name) for name in EXPLICIT_DESTINATION):
        queue = route(task, query_engine(args, kwargs, default_engine))
        if queue is not None:
            options["queue"] = queue
    try:
        if isinstance(options.get("queue"), str):
            check_queue_name(options["queue"])
        notify = kwargs.pop("notify", None)
        if notify is not None:
            options["headers"] = {**(options.get("headers") or {}),
                                  NOTIFY_HEADER: check_notify(notify)}
        timeout = check_timeout(kwargs.get("timeout"), limits)
        options["priority"] = priority_value(options.get("priority"), limits.default_priority)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    check_args_size(args, kwargs, limits.max_args_bytes)
    # the runner's own deadline (what is left of timeout) comes first, then Celery's limits
    soft, hard = time_limits(timeout, limits.grace)
    options.setdefault("soft_time_limit", soft)
    options.setdefault("time_limit", hard)
    return kwargs, options
