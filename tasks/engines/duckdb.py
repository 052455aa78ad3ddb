"""The embedded default engine: DuckDB, one connection per statement."""
from __future__ import annotations

import duckdb as _duckdb

from ..errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout
from .base import Engine, Params, Session

BATCH_ROWS = 65_536

# Another process holds the write lock on the file: that passes.
_TRANSIENT_MARKERS = ("could not set lock", "conflicting lock", "resource temporarily unavailable")


class DuckDBSession(Session):
    def __init__(self, connection: "_duckdb.DuckDBPyConnection") -> None:
        self._connection = connection
        self._reader = None

    def execute(self, sql: str, params: Params):
        relation = self._connection.sql(sql, params=params if params is not None else None)
        if relation is None:  # DDL/DML: nothing to fetch
            return None, iter(())
        to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
        self._reader = reader = to_reader(BATCH_ROWS)
        return reader.schema, iter(reader)

    def cancel(self) -> None:
        self._connection.interrupt()

    def close(self) -> None:
        # An interrupted stream keeps the connection busy until its reader is
        # closed (a traceback may still reference it), so close that first.
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._connection.close()


class DuckDBEngine(Engine):
    name = "duckdb"

    def __init__(self, path: str = ":memory:", read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only

    def open(self) -> DuckDBSession:
        try:
            connection = _duckdb.connect(self.path, read_only=self.read_only)
        except Exception as exc:  # classified below, never swallowed
            raise self.classify(exc) from exc
        return DuckDBSession(connection)

    def classify(self, exc: BaseException) -> Exception:
        message = str(exc).strip()
        lowered = message.lower()
        if isinstance(exc, _duckdb.InterruptException):
            return TaskTimeout(f"duckdb statement interrupted: {message}")
        if isinstance(exc, (_duckdb.IOException, _duckdb.ConnectionException)):
            if any(marker in lowered for marker in _TRANSIENT_MARKERS):
                return EngineUnavailable(f"duckdb database {self.path!r} is busy: {message}")
            if "does not exist" in lowered or "cannot open" in lowered:
                return EngineNotConfigured(
                    f"duckdb database {self.path!r} cannot be opened (TURBO_DUCKDB_PATH): {message}")
        return QueryError(f"duckdb: {message}")
