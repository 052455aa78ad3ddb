"""Registry of SQL engines by name."""
from __future__ import annotations

from typing import Callable, Protocol

from ..errors import InvalidRequest
from .base import Engine, Session


class Settings(Protocol):
    """What the engines read of the worker's settings (celeryapp.config.Settings has it)."""

    duckdb_path: str
    duckdb_is_read_only: bool


EngineFactory = Callable[[Settings], Engine]


def _duckdb(settings: Settings) -> Engine:
    from .duckdb import DuckDBEngine

    return DuckDBEngine(settings.duckdb_path, read_only=settings.duckdb_is_read_only)


def _databricks(settings: Settings) -> Engine:
    from .databricks import DatabricksEngine

    return DatabricksEngine()


ENGINES: dict[str, EngineFactory] = {"duckdb": _duckdb, "databricks": _databricks}


def get_engine(name: str, settings: Settings) -> Engine:
    try:
        factory = ENGINES[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}") from None
    return factory(settings)


__all__ = ["ENGINES", "Engine", "Session", "get_engine"]
