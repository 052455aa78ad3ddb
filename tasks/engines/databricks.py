"""Databricks SQL warehouses through databricks-sql-connector.

Credentials come only from the worker's environment (``DATABRICKS_*``), never
from task arguments. The connector already retries 429/503 on ExecuteStatement;
what still fails here is classified: SQLSTATE class 42/22/... is permanent.
"""
from __future__ import annotations

import os
import re
from typing import Iterator

import pyarrow as pa

from ..errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout
from .base import Engine, Params, Session

FETCH_ROWS = 100_000
REQUIRED_ENV = ("DATABRICKS_SERVER_HOSTNAME", "DATABRICKS_HTTP_PATH", "DATABRICKS_TOKEN")

_SQLSTATE = re.compile(r"SQLSTATE:?\s*([0-9A-Z]{5})")
# SQLSTATE classes that no retry can fix: syntax/access (42), data (22),
# cardinality (21), constraints (23), invalid transaction/cursor (24/25/2D), feature (0A).
_PERMANENT_CLASSES = {"42", "22", "21", "23", "24", "25", "2D", "0A", "08P"}
_TRANSIENT_MARKERS = (
    "temporarily_unavailable", "temporarily unavailable", "warehouse is starting",
    "is starting", "resource_exhausted", "too many requests", "429", "503",
    "service unavailable", "connection reset", "timed out",
)


class DatabricksSession(Session):
    def __init__(self, connection, engine: "DatabricksEngine") -> None:
        self._connection = connection
        self._cursor = connection.cursor()
        self._engine = engine

    def execute(self, sql: str, params: Params):
        self._cursor.execute(sql, parameters=params)
        if self._cursor.description is None:
            return None, iter(())
        first = self._cursor.fetchmany_arrow(FETCH_ROWS)
        return first.schema, self._batches(first)

    def _batches(self, first: pa.Table) -> Iterator[pa.RecordBatch]:
        table = first
        while table.num_rows:
            yield from table.to_batches()
            table = self._cursor.fetchmany_arrow(FETCH_ROWS)

    def cancel(self) -> None:
        self._cursor.cancel()

    def close(self) -> None:
        try:
            self._cursor.close()
        finally:
            self._connection.close()

    @property
    def statement_id(self) -> str | None:
        return getattr(self._cursor, "query_id", None)


class DatabricksEngine(Engine):
    name = "databricks"

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def connect_args(self) -> dict:
        missing = [name for name in REQUIRED_ENV if not self._environ.get(name)]
        if missing:
            raise EngineNotConfigured(
                "databricks engine is not configured on this worker: set "
                + ", ".join(missing) + " in the worker's environment")
        args = {
            "server_hostname": self._environ["DATABRICKS_SERVER_HOSTNAME"],
            "http_path": self._environ["DATABRICKS_HTTP_PATH"],
            "access_token": self._environ["DATABRICKS_TOKEN"],
        }
        for name in ("catalog", "schema"):
            value = self._environ.get(f"DATABRICKS_{name.upper()}")
            if value:
                args[name] = value
        return args

    def open(self) -> DatabricksSession:
        args = self.connect_args()
        from databricks import sql as dbsql  # heavy import, worker side only

        try:
            connection = dbsql.connect(**args)
        except Exception as exc:
            raise self.classify(exc) from exc
        return DatabricksSession(connection, self)

    def classify(self, exc: BaseException) -> Exception:
        from databricks.sql import exc as dbexc

        message = str(exc).strip() or type(exc).__name__
        lowered = message.lower()
        state = _SQLSTATE.search(message)
        sqlstate = state.group(1) if state else None
        if "cancel" in lowered and isinstance(exc, dbexc.DatabaseError):
            return TaskTimeout(f"databricks statement cancelled: {message}")
        if sqlstate and (sqlstate[:2] in _PERMANENT_CLASSES or sqlstate[:3] in _PERMANENT_CLASSES):
            return QueryError(f"databricks [{sqlstate}]: {message}")
        if isinstance(exc, (dbexc.RequestError, dbexc.OperationalError)) and not isinstance(
                exc, dbexc.UnsafeToRetryError):
            return EngineUnavailable(f"databricks unavailable: {message}")
        if any(marker in lowered for marker in _TRANSIENT_MARKERS):
            return EngineUnavailable(f"databricks unavailable: {message}")
        return QueryError(f"databricks: {message}")
