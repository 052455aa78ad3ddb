"""Registry of SQL engines by name; one Engine per name and settings in a process."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from ..errors import InvalidRequest
from .base import Engine, Session
from .pool import POOL, Policy, SessionPool


class Settings(Protocol):
    """What the engines read of the worker's settings (celeryapp.config.Settings has it)."""

    duckdb_path: str
    duckdb_is_read_only: bool
    duckdb_threads: int | None
    session_max_idle: float
    session_max_age: float


EngineFactory = Callable[[Settings, int], Engine]


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def duckdb_threads(settings: Settings, processes: int = 1) -> int:
    """TURBO_DUCKDB_THREADS, else the CPUs shared out among ``processes`` (at least 1):
    the worker's prefork children each hold their own DuckDB instance."""
    return settings.duckdb_threads or max(1, cpu_count() // max(1, processes))


def policy(settings: Settings) -> Policy:
    return Policy(max_idle=settings.session_max_idle, max_age=settings.session_max_age)


def _duckdb(settings: Settings, processes: int) -> Engine:
    from .duckdb import DuckDBEngine

    return DuckDBEngine(settings.duckdb_path, read_only=settings.duckdb_is_read_only,
                        threads=duckdb_threads(settings, processes), policy=policy(settings))


def _databricks(settings: Settings, processes: int) -> Engine:
    from .databricks import DatabricksEngine

    return DatabricksEngine(policy=policy(settings))


ENGINES: dict[str, EngineFactory] = {"duckdb": _duckdb, "databricks": _databricks}

_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str, settings: Settings, processes: int = 1) -> Engine:
    """The engine ``name`` for ``settings``: the same object for the same connection
    settings within a process (its pooled connections are keyed by them).

    ``processes``: how many processes of this worker share the host's CPUs (the
    prefork pool's size; 1 for threads/solo pools or outside a worker).
    """
    try:
        factory = ENGINES[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}") from None
    engine = factory(settings, processes)
    cache_key = (engine.key(), engine.policy)
    with _engines_lock:
        return _engines.setdefault(cache_key, engine)


__all__ = ["ENGINES", "POOL", "Engine", "Session", "SessionPool", "cpu_count",
           "duckdb_threads", "get_engine"]
