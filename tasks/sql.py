"""Execute one statement on an engine with a deadline; no Celery here.

Everything the statement needs happens in the deadline's work thread, connecting
included: a session from the pool (or a new one, with the engine's own retries), the
statement, its result, and the session back to the pool or closed. So ``timeout`` (this
attempt's deadline: what the task has left of the caller's timeout, :mod:`tasks.budget`)
covers the whole of it, and a timeout or a stop (revoke, cancel) at any moment -
connecting, submitting, running, fetching - cancels the statement at the engine and
closes its session; a connection that is still being opened when the deadline passes is
closed the moment it is open, never kept.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deadline import run_with_deadline
from .engines import Engine
from .engines.base import Params, Session
from .engines.pool import POOL, Lease, SessionPool
from .errors import InvalidRequest, QueryError, TurboError
from .results import collect

log = logging.getLogger(__name__)

CONNECT_POLL_S = 0.05  # how often a call waiting for its connection looks for a stop


def check_params(params: Any) -> Params:
    if params is None or isinstance(params, (list, tuple, dict)):
        return params
    raise InvalidRequest(
        f"params must be a list (positional ?) or a dict (named $name / :name), "
        f"not {type(params).__name__}")


def execute(engine: Engine, sql: str, params: Params, *, timeout: float,
            max_inline_rows: int, preview_rows: int, spill_path: Path,
            on_start=None, task_id: str | None = None,
            pool: SessionPool = POOL) -> dict[str, Any]:
    """Run ``sql``; return the result dict of the public contract (minus task fields).

    The statement runs in a session (cursor) of its own on a connection from ``pool``,
    this process's: the connection goes back to the pool after a success, or after an
    SQL error the engine says leaves it intact; after anything else (timeout, cancel,
    revoke, a lost connection) and after a statement that changed the connection's
    state (``Session.reusable``) it is closed. A pooled connection the engine calls
    stale (``engine.stale_connection(exc)``: the statement never started on it) is
    closed and the statement goes to another one at once.

    ``timeout`` covers connecting too. ``task_id`` (the Celery task's id) and the
    call's deadline are handed to the engine's sessions (labels, the driver's retries).
    ``on_start(session)`` is called at once, in the calling thread, with a stand-in for
    the statement's session (its ``statement_id`` is the running statement's, once there
    is one).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("sql must be a non-empty string")
    params = check_params(params)
    started = time.monotonic()
    call = _Call(engine, pool, deadline=started + timeout, task_id=task_id)
    if on_start:
        on_start(call.view)

    def consume(schema, batches) -> dict[str, Any]:
        return collect(schema, batches, max_inline_rows=max_inline_rows,
                       preview_rows=preview_rows, spill_path=spill_path)

    try:
        result = run_with_deadline(lambda: call.run(sql, params, consume), call.cancel,
                                   timeout, what=f"{engine.name} query")
    except BaseException:
        if call.begun.is_set() and not call.ended.is_set():
            log.warning("the cancelled %s statement still runs; its session is closed when "
                        "it returns", engine.name)
        raise
    result["engine"] = engine.name
    result["elapsed_s"] = round(time.monotonic() - started, 4)
    return result


class _Stopped(Exception):
    """The call was cancelled before its statement started (never reaches a caller:
    ``run_with_deadline`` raises its own TaskTimeout / Cancelled)."""


class _Stale(Exception):
    """A pooled connection the engine no longer knows: try the statement on another."""


class _Call:
    """One call's statement, run by :meth:`run` in the work thread; :meth:`cancel` from
    any thread at any moment (the deadline's or a signal's)."""

    def __init__(self, engine: Engine, pool: SessionPool, *, deadline: float,
                 task_id: str | None) -> None:
        self.engine, self.pool, self.deadline, self.task_id = engine, pool, deadline, task_id
        self.begun, self.ended = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._abandoned = False  # a connect given up on: its thread closes what it opens
        self.session: Session | None = None
        self.view = (_ViewWithIds if engine.statement_ids else _View)(self)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def cancel(self) -> None:
        with self._lock:
            self._stopped = True
            session = self.session
        if session is not None:
            session.cancel()

    def run(self, sql: str, params: Params, consume: Callable) -> dict[str, Any]:
        self.begun.set()
        try:
            while True:
                lease = self._acquire()
                try:
                    return self._statement(lease, sql, params, consume)
                except _Stale as stale:
                    log.info("a pooled %s connection was stale (%s); trying a new one",
                             self.engine.name, stale.__cause__)
        finally:
            self.ended.set()

    def _acquire(self) -> Lease:
        engine = self.engine
        if self.stopped:
            raise _Stopped("stopped before it connected")
        connect = self._connect_remote if engine.remote else engine.connect
        lease = self.pool.acquire(engine.key(), connect, close=engine.close_connection,
                                  policy=engine.policy, check=engine.healthy)
        if self.stopped:  # the deadline passed while connecting: nothing runs, nothing stays
            lease.discard()
            raise _Stopped("stopped while it connected")
        return lease

    def _connect_remote(self) -> Any:
        """``engine.connect(deadline=)`` in a thread of its own, so that a stop need not
        wait for it (a slow session open, the engine's retries): the call is given up at
        once, and the connection, if it opens after all, is closed by that thread."""
        engine, outcome, done = self.engine, {}, threading.Event()

        def target() -> None:
            try:
                outcome["connection"] = engine.connect(deadline=self.deadline)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            with self._lock:
                abandoned = self._abandoned
                done.set()
            if abandoned and "connection" in outcome:
                try:
                    engine.close_connection(outcome["connection"])
                except Exception:
                    log.warning("closing a %s connection opened too late failed", engine.name,
                                exc_info=True)

        threading.Thread(target=target, name=f"turbo-{engine.name}-connect", daemon=True).start()
        while not done.wait(CONNECT_POLL_S):
            if self.stopped:
                with self._lock:
                    if not done.is_set():
                        self._abandoned = True
                        raise _Stopped("stopped while it connected")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["connection"]

    def _statement(self, lease: Lease, sql: str, params: Params,
                   consume: Callable) -> dict[str, Any]:
        engine = self.engine
        keep = False
        try:
            session = engine.session(lease.item, deadline=self.deadline, task_id=self.task_id)
        except BaseException as exc:
            lease.discard()
            if isinstance(exc, Exception) and not isinstance(exc, TurboError):
                raise engine.classify(exc) from exc
            raise
        with self._lock:
            self.session = session
            stopped = self._stopped
        if stopped:
            session.cancel()
        try:
            try:
                schema, batches = session.execute(sql, params)
                result = consume(schema, batches)
            except TurboError:
                raise
            except Exception as exc:
                if lease.reused and not self.stopped and engine.stale_connection(exc):
                    raise _Stale() from exc
                raise engine.classify(exc) from exc
            keep = session.reusable
            return result
        except QueryError as exc:  # the engine judged the statement: is the connection intact?
            keep = session.reusable and engine.keeps_connection_after(exc)
            raise
        finally:
            with self._lock:
                self.session = None
            # keep the original error, not a close() failure; a session that fails to
            # close leaves its connection in doubt; a cancelled call keeps nothing open
            keep = _close_quietly(session) and keep and not self.stopped
            if keep:
                lease.release()
            else:
                lease.discard()


class _View(Session):
    """What ``on_start`` gets: the call's session, before and after it exists."""

    def __init__(self, call: _Call) -> None:
        self._call = call

    def execute(self, sql: str, params: Params):
        raise NotImplementedError("the runner executes the statement")

    def cancel(self) -> None:
        self._call.cancel()

    def close(self) -> None:
        pass


class _ViewWithIds(_View):
    """For engines whose sessions know the engine's statement id."""

    @property
    def statement_id(self) -> str | None:
        session = self._call.session
        return session.statement_id if session is not None else None


def _close_quietly(session) -> bool:
    try:
        session.close()
    except Exception:
        log.warning("closing the %s session failed", type(session).__name__, exc_info=True)
        return False
    return True
