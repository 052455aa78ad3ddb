"""The embedded default engine: DuckDB, one connection per process, a cursor per statement.

The connection (the database instance: its buffer cache, its threads) is kept by
``tasks.engines.pool`` between statements; each statement runs on a fresh cursor,
which DuckDB makes a connection of its own to the same instance: temporary tables,
variables, ``SET`` of session options and prepared statements go with it. What lives
in the instance itself (tables of an in-memory database, ``ATTACH``, global settings
such as ``SET threads``) is only ever changed by statements that are not queries, so
after any statement other than a ``SELECT`` or ``EXPLAIN`` the connection is closed
instead of kept: the next statement sees the database as a fresh connection would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import duckdb as _duckdb

from ..errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout
from .base import Engine, Params, Session
from .pool import Policy

BATCH_ROWS = 65_536

# Another process holds the write lock on the file: that passes.
_TRANSIENT_MARKERS = ("could not set lock", "conflicting lock", "resource temporarily unavailable")

# Statements that change nothing a later statement could see (beyond their cursor).
_READS = frozenset({_duckdb.StatementType.SELECT, _duckdb.StatementType.EXPLAIN})

# The engine judged the statement (syntax, names, types, values, constraints): the
# connection is as good as before. Anything else (an interrupt, I/O, out of memory,
# an internal or fatal error, an exception outside DuckDB) closes it.
_CLEAN_SQL_ERRORS = (_duckdb.ProgrammingError, _duckdb.DataError, _duckdb.IntegrityError,
                     _duckdb.NotSupportedError)


@dataclass(eq=False)
class DuckDBConnection:
    """A pooled connection and, for a file database, the file it opened."""

    connection: _duckdb.DuckDBPyConnection
    file: tuple[int, int, int, int] | None = None  # (device, inode, size, mtime ns)


def _file_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _in_memory(path: str) -> bool:
    return not path or path.startswith(":memory:")


class DuckDBSession(Session):
    def __init__(self, connection: _duckdb.DuckDBPyConnection) -> None:
        self._connection = connection  # this statement's cursor
        self._reader = None
        self.reusable = True

    def execute(self, sql: str, params: Params):
        try:
            kinds = {statement.type for statement in self._connection.extract_statements(sql)}
        except _duckdb.Error:  # it does not parse: nothing will run
            kinds = set()
        self.reusable = kinds <= _READS
        relation = None
        try:
            relation = self._connection.sql(sql, params=params if params is not None else None)
            if relation is None:  # DDL/DML: nothing to fetch
                return None, iter(())
            to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
            self._reader = reader = to_reader(BATCH_ROWS)
        except BaseException:
            # The traceback keeps this frame alive until the task ends, and a relation
            # whose statement was interrupted keeps the cursor busy: close() would be
            # refused ("connection is busy with another call").
            relation = None
            raise
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

    def __init__(self, path: str = ":memory:", read_only: bool = False,
                 threads: int | None = None, policy: Policy = Policy()) -> None:
        self.path = path
        self.read_only = read_only
        self.threads = threads  # SET threads for each connection (None: DuckDB's default)
        if not _in_memory(path) and not read_only:
            # an idle read-write connection would keep the file's write lock from every
            # other process: open it per statement, as before
            policy = replace(policy, max_idle=0)
        self.policy = policy

    def key(self):
        return (self.name, self.path, self.read_only, self.threads)

    def connect(self, deadline: float | None = None) -> DuckDBConnection:
        config = {"threads": self.threads} if self.threads else {}
        try:
            connection = _duckdb.connect(self.path, read_only=self.read_only, config=config)
        except Exception as exc:  # classified below, never swallowed
            raise self.classify(exc) from exc
        file = None if _in_memory(self.path) else _file_identity(self.path)
        return DuckDBConnection(connection, file)

    def session(self, connection: DuckDBConnection, *, deadline: float | None = None,
                task_id: str | None = None) -> DuckDBSession:
        return DuckDBSession(connection.connection.cursor())

    def close_connection(self, connection: DuckDBConnection) -> None:
        connection.connection.close()

    def healthy(self, connection: DuckDBConnection) -> bool:
        """A file database is still the file at its path (not replaced, not changed).

        DuckDB shares one instance among the connections a process opens to one file:
        on a threads pool, a connection opened while another still holds the old file
        gets the old instance too, until every connection to it has closed (idle, age).
        """
        return connection.file is None or _file_identity(self.path) == connection.file

    def keeps_connection_after(self, error: BaseException) -> bool:
        return isinstance(error, QueryError) and isinstance(error.__cause__, _CLEAN_SQL_ERRORS)

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
                    f"duckdb database {self.path!r} cannot be opened (TURBO_DUCKDB_PATH): "
                    f"{message}")
        return QueryError(f"duckdb: {message}")
