"""Engine connections kept per process between statements; no Celery here.

A query used to open and close its own connection: 20 ms for ``duckdb.connect()``,
a cold buffer cache for a file database, an OpenSession/CloseSession round trip per
statement on Databricks. A :class:`SessionPool` keeps them instead, per process:

* keyed by the engine's identity (name and connection settings; never a secret in
  clear), so two engines with the same settings share connections;
* a connection is checked out by one statement at a time (:meth:`SessionPool.acquire`
  returns a :class:`Lease`) and comes back with :meth:`Lease.release`, or is closed
  with :meth:`Lease.discard` when the statement may have left it unusable (an
  interrupt, a lost connection: the caller decides, see ``tasks/sql.py``);
* :class:`Policy`: ``max_idle`` seconds unused, ``max_age`` seconds since it was
  opened, ``max_uses`` statements, after which it is closed rather than reused, and at
  most ``max_size`` idle connections kept per key (more may be open at once; the
  extra ones are closed when they come back); ``max_idle <= 0`` keeps nothing;
* an optional ``check(connection) -> bool`` runs before a reuse (cheap and local:
  the file a DuckDB connection opened is still the file at that path);
* fork safety: a child process never uses what its parent opened. ``os.fork`` (the
  prefork pool) empties every pool in the child, without closing anything: closing a
  copied DuckDB handle or Databricks session would act on the parent's. Those objects
  stay referenced, so no destructor runs them either.

Expired connections are closed when the pool is next used (there is no reaper
thread); closing happens outside the pool's lock.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    max_idle: float = 600.0  # seconds unused before it is closed; <= 0: never kept
    max_age: float = 3600.0  # seconds since it was opened; <= 0: no limit
    max_size: int = 4  # idle connections kept per key
    max_uses: int | None = None  # statements, then closed (None: no limit)


@dataclass(eq=False)
class _Entry:
    key: Hashable
    item: Any
    close: Callable[[Any], None]
    policy: Policy
    created: float
    generation: int
    last_used: float = 0.0
    uses: int = 0

    def expired(self, now: float) -> str | None:
        """Why this idle entry must not be handed out again, or None."""
        policy = self.policy
        if policy.max_idle <= 0 or now - self.last_used > policy.max_idle:
            return "idle"
        if policy.max_age > 0 and now - self.created > policy.max_age:
            return "age"
        if policy.max_uses is not None and self.uses >= policy.max_uses:
            return "uses"
        return None


@dataclass(eq=False)
class Lease:
    """One checked-out connection (``item``); hand it back exactly once."""

    pool: SessionPool
    entry: _Entry
    reused: bool
    done: bool = field(default=False)

    @property
    def item(self) -> Any:
        return self.entry.item

    def release(self) -> None:
        """The statement ended cleanly: keep the connection for the next one."""
        self.pool._give_back(self, keep=True)

    def discard(self) -> None:
        """The connection may be unusable: close it, never hand it out again."""
        self.pool._give_back(self, keep=False)


_POOLS: weakref.WeakSet[SessionPool] = weakref.WeakSet()


class SessionPool:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[Hashable, list[_Entry]] = {}
        self._in_use = 0
        self._pid = os.getpid()
        self._generation = 0
        self._orphans: list[Any] = []  # the parent's connections, in a forked child
        self._counts = dict.fromkeys(
            ("opened", "reused", "released", "discarded", "closed", "expired",
             "failed_checks", "forks"), 0)
        _POOLS.add(self)

    # --- the caller's side -----------------------------------------------------------
    def acquire(self, key: Hashable, connect: Callable[[], Any], *,
                close: Callable[[Any], None], policy: Policy = Policy(),
                check: Callable[[Any], bool] | None = None) -> Lease:
        """A connection for ``key``: an idle one that passes ``check``, else ``connect()``.

        ``connect()``'s errors propagate (nothing is kept); ``close(item)`` is how this
        pool closes the item later.
        """
        if self._pid != os.getpid():  # forked without the at-fork hook (belt and braces)
            self._forget_after_fork()
        now = self._clock()
        to_close: list[tuple[_Entry, str]] = []
        found: _Entry | None = None
        try:
            with self._lock:
                self._collect_expired(now, to_close)
                idle = self._idle.get(key)
                while idle:
                    candidate = idle.pop()  # the most recently used: the warmest
                    # settings changed: the old rules no longer apply
                    if candidate.policy != policy:
                        to_close.append((candidate, "policy"))
                        continue
                    found = candidate
                    break
                if idle is not None and not idle:
                    del self._idle[key]
                if found is not None:
                    self._in_use += 1
            if found is not None and check is not None:
                healthy = False
                try:
                    healthy = bool(check(found.item))
                except Exception:
                    log.debug("health check of a pooled %r connection raised", key, exc_info=True)
                if not healthy:
                    with self._lock:
                        self._in_use -= 1
                        self._counts["failed_checks"] += 1
                    to_close.append((found, "check"))
                    found = None
        finally:
            self._close_all(to_close)
        if found is not None:
            with self._lock:
                self._counts["reused"] += 1
            return Lease(self, found, reused=True)
        item = connect()
        with self._lock:
            self._in_use += 1
            self._counts["opened"] += 1
            entry = _Entry(key, item, close, policy, created=now, generation=self._generation)
        return Lease(self, entry, reused=False)

    def _give_back(self, lease: Lease, keep: bool) -> None:
        if lease.done:
            return
        lease.done = True
        entry = lease.entry
        now = self._clock()
        to_close: list[tuple[_Entry, str]] = []
        with self._lock:
            if entry.generation != self._generation:
                # opened before a fork, in the parent: not ours to close or to keep
                self._orphans.append(entry.item)
                return
            self._in_use -= 1
            entry.uses += 1
            entry.last_used = now
            self._counts["released" if keep else "discarded"] += 1
            if not keep:
                to_close.append((entry, "discarded"))
            else:
                reason = entry.expired(now)
                idle = self._idle.setdefault(entry.key, [])
                if reason is None and len(idle) < entry.policy.max_size:
                    idle.append(entry)
                else:
                    to_close.append((entry, reason or "full"))
                    if reason is not None:
                        self._counts["expired"] += 1
                    if not idle:
                        del self._idle[entry.key]
            self._collect_expired(now, to_close)
        self._close_all(to_close)

    # --- housekeeping ----------------------------------------------------------------
    def _collect_expired(self, now: float, to_close: list) -> None:
        """Move every expired idle entry to ``to_close`` (called with the lock held)."""
        for key in list(self._idle):
            kept = []
            for entry in self._idle[key]:
                reason = entry.expired(now)
                if reason is None:
                    kept.append(entry)
                else:
                    to_close.append((entry, reason))
                    self._counts["expired"] += 1
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    def _close_all(self, entries: list[tuple[_Entry, str]]) -> None:
        for entry, reason in entries:
            try:
                entry.close(entry.item)
            except Exception:
                log.warning("closing a pooled %r connection (%s) failed", entry.key, reason,
                            exc_info=True)
            with self._lock:
                self._counts["closed"] += 1

    def clear(self) -> None:
        """Close every idle connection (those in use are kept or closed as they come back)."""
        with self._lock:
            entries = [(e, "clear") for idle in self._idle.values() for e in idle]
            self._idle.clear()
        self._close_all(entries)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop (do not close) what the parent opened."""
        self._lock = threading.Lock()  # the parent's may have been held at fork time
        for idle in self._idle.values():
            self._orphans.extend(entry.item for entry in idle)
        self._idle = {}
        self._in_use = 0
        self._generation += 1
        self._pid = os.getpid()
        self._counts["forks"] += 1

    def stats(self) -> dict:
        """Counters since this pool was made (process-local), and what it holds now."""
        with self._lock:
            return {**self._counts, "in_use": self._in_use,
                    "idle": {repr(key): len(idle) for key, idle in self._idle.items()}}


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

POOL = SessionPool()
"""The process's pool: what ``tasks.sql.execute`` uses."""
