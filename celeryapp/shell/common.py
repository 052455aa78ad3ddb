"""What every ``turbo`` command shares: exit codes, errors, TURBO_* settings, Redis clients.

Standard library only, like the rest of the shell client (see celeryapp/shell/cli.py).
"""
from __future__ import annotations

import os

from ..core import names as C
from ..core.names import FLOW_START_TASK, META_KEY  # noqa: F401  (re-exported)
from ..core.policy import Limits
from . import resp

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REDIS = 0, 1, 2, 3
READY = ("SUCCESS", "FAILURE", "REVOKED")
FLOW_DONE = ("succeeded", "failed", "cancelled")
UNKNOWN = "PENDING (unknown or not started)"


class UsageError(Exception):
    """Bad arguments or input: exit 2."""


class Failed(Exception):
    """The task failed, was cancelled, is not finished or not found: exit 1."""


# --- settings from the environment (the same TURBO_* names as celeryapp.config) ---

def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_number(name: str, default: float) -> float:
    value = env(name)
    if value is None:
        return float(default)
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {value!r}") from None


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    raise UsageError(f"{name} must be true or false, got {value!r}")


def sent_event() -> bool:
    """Whether to emit Flower's task-sent event, as Celery does (TURBO_SEND_SENT_EVENT)."""
    return env_bool("TURBO_SEND_SENT_EVENT", False)


def _connect(url: str, variable: str) -> resp.Redis:
    tls = {}
    if url.startswith("rediss:"):
        tls = {"tls_ca": env("TURBO_REDIS_TLS_CA"), "tls_cert": env("TURBO_REDIS_TLS_CERT"),
               "tls_key": env("TURBO_REDIS_TLS_KEY")}
    try:
        return resp.connect(url, password=env("TURBO_REDIS_PASSWORD"), **tls)
    except resp.RedisConfigError as exc:
        raise resp.RedisConfigError(f"{variable}: {exc}") from None


def broker() -> resp.Redis:
    return _connect(env("TURBO_BROKER_URL", C.DEFAULT_BROKER_URL), "TURBO_BROKER_URL")


def backend() -> resp.Redis:
    """The result backend (TURBO_RESULT_BACKEND, default the broker URL)."""
    if env("TURBO_RESULT_BACKEND"):
        return _connect(env("TURBO_RESULT_BACKEND"), "TURBO_RESULT_BACKEND")
    return broker()


def timeout_policy(kind: str) -> Limits:
    """The timeout policy of ``kind`` ("query", "agent") from the TURBO_* variables,
    as the worker's settings read them."""
    upper = kind.upper()
    return Limits(env_number(f"TURBO_{upper}_TIMEOUT", getattr(C, f"DEFAULT_{upper}_TIMEOUT")),
                  env_number(f"TURBO_{upper}_MAX_TIMEOUT",
                             getattr(C, f"DEFAULT_{upper}_MAX_TIMEOUT")),
                  env_number("TURBO_TIME_LIMIT_GRACE", C.DEFAULT_TIME_LIMIT_GRACE),
                  f"TURBO_{upper}_MAX_TIMEOUT", env("TURBO_DEFAULT_PRIORITY", C.DEFAULT_PRIORITY),
                  int(env_number("TURBO_MAX_ARGS_BYTES", C.DEFAULT_MAX_ARGS_BYTES)),
                  int(env_number("TURBO_MAX_SQL_BYTES", C.DEFAULT_MAX_SQL_BYTES)))


def result_expires() -> int:
    return int(env_number("TURBO_RESULT_EXPIRES", C.DEFAULT_RESULT_EXPIRES))
