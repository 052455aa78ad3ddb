"""One statement on a pooled connection (:class:`DatabricksSession`).

Sessions (connections) are kept per worker process by ``tasks.engines.pool``: one
statement at a time on each, a fresh cursor per statement; closed when idle or old
(TURBO_SESSION_MAX_IDLE, TURBO_SESSION_MAX_AGE), after 1,000 statements (the connector
keeps every cursor it made), after a timeout or cancel, and after any error but an SQL
error the warehouse judged (``keeps_connection_after``). A pooled session the warehouse
forgot (a restart: ``Invalid SessionHandle``) is replaced at once by the runner
(``stale_connection``): nothing ran on it. Every statement carries the Celery task's id
as the query tag ``turbo_task_id``: the warehouse's query history leads back to the task.

Statements run asynchronously (``execute_async``) and this module polls their state,
so that a cancel never queues behind the connector's own status loop: the connector
holds one request lock per connection for each GetOperationStatus, which the
warehouse long-polls; between two polls here the lock is free. ``cancel()`` only sets
a flag and wakes the poll; the thread running the statement sends CancelOperation as
soon as its current request returns, also when the cancel came before the statement
had an id (it is then cancelled the moment ExecuteStatement answers), and stops
fetching a result between pages. Before each request the connector's retry budget is
set to what is left of the call's deadline (:mod:`.retries`).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pyarrow as pa

from ..base import Params, Session
from .errors import StatementCancelled
from .retries import bound_retries

log = logging.getLogger(__name__)

FETCH_ROWS = 100_000
QUERY_TAG = "turbo_task_id"  # the statement's query tag naming the Celery task

# Polling the state of a running statement: first after 50 ms, then doubling up to
# 0.5 s. The warehouse long-polls each request (it answers at once on a change), so
# the pause only matters for a statement that keeps running.
POLL_FIRST_S = 0.05
POLL_MAX_S = 0.5


class DatabricksSession(Session):
    """One statement on a pooled connection: its own cursor, run asynchronously and polled
    here (see the module docstring); ``cancel()`` may come from any thread at any time."""

    def __init__(self, connection, *, deadline: float | None = None,
                 task_id: str | None = None) -> None:
        self._connection = connection
        self._cursor = connection.cursor()
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
