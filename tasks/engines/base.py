"""What an SQL engine provides to the query runner."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from .pool import Policy

Params = Mapping[str, Any] | Sequence[Any] | None


class Session(ABC):
    """One statement on a connection (a cursor): its own state, closed after the statement.

    The connection under it outlives it (``tasks.engines.pool``); ``close()`` closes
    the session's cursor and result stream only.
    """

    #: False when the statement changed something a later statement on the same
    #: connection would see (DuckDB: DDL, SET, ATTACH...): the runner then closes the
    #: connection instead of keeping it.
    reusable: bool = True

    @abstractmethod
    def execute(self, sql: str,
                params: Params) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        """Run ``sql`` with bound ``params``; return the schema and a stream of batches.

        A statement without a result set returns ``(None, iter(()))``.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Stop the running statement at the engine; safe to call from another thread."""

    @abstractmethod
    def close(self) -> None:
        ...

    @property
    def statement_id(self) -> str | None:
        """The engine's id for the running statement, when it has one."""
        return None


class Engine(ABC):
    name: str
    #: how long the pool keeps this engine's connections (set by the engine's factory)
    policy: Policy = Policy()
    #: a remote engine: connecting may take long (session open, the driver's retries),
    #: so the runner connects in a thread of its own that a stop need not wait for
    remote: bool = False
    #: its sessions know the engine's id of the running statement (``statement_id``)
    statement_ids: bool = False

    def key(self) -> Hashable:
        """Identity of the connections this engine opens (name and connection settings,
        no secret in clear): engines with equal keys share pooled connections."""
        return (self.name,)

    @abstractmethod
    def connect(self, deadline: float | None = None) -> Any:
        """Open a connection, giving up by ``deadline`` (``time.monotonic()``) where the
        engine can; errors come out already classified (see :meth:`classify`)."""

    @abstractmethod
    def session(self, connection: Any, *, deadline: float | None = None,
                task_id: str | None = None) -> Session:
        """A session (cursor) for one statement on ``connection``; an engine may bound it
        by ``deadline`` and label the statement with the Celery ``task_id``."""

    def close_connection(self, connection: Any) -> None:
        connection.close()

    def healthy(self, connection: Any) -> bool:
        """Cheap, local check before an idle connection is reused."""
        return True

    def stale_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a pooled connection was gone before the statement started
        on it (the runner then runs it on another connection at once)."""
        return False

    def keeps_connection_after(self, error: BaseException) -> bool:
        """Whether the connection is still good after the statement failed with ``error``
        (a :class:`~tasks.errors.QueryError`, its engine exception as ``__cause__``)."""
        return False

    def open(self) -> Session:
        """A session on a connection of its own, closed with it (no pool)."""
        connection = self.connect()
        try:
            return _Owning(self.session(connection), self, connection)
        except BaseException:
            self.close_connection(connection)
            raise

    @abstractmethod
    def classify(self, exc: BaseException) -> Exception:
        """Map an engine exception to a Permanent or Transient Turbo error."""


class _Owning(Session):
    """:meth:`Engine.open`'s session: closing it closes its connection too."""

    def __init__(self, session: Session, engine: Engine, connection: Any) -> None:
        self._session, self._engine, self._connection = session, engine, connection

    def execute(self, sql: str, params: Params):
        return self._session.execute(sql, params)

    def cancel(self) -> None:
        self._session.cancel()

    def close(self) -> None:
        try:
            self._session.close()
        finally:
            self._engine.close_connection(self._connection)

    @property
    def reusable(self) -> bool:  # type: ignore[override]
        return self._session.reusable

    @property
    def statement_id(self) -> str | None:
        return self._session.statement_id
