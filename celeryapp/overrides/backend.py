"""Celery's Redis result backend: one round trip per state, subscribing only on wait.

Two changes to the stock backend, both for cost per task, neither for semantics:

* ``delay()`` does not SUBSCRIBE to the task's result channel (``on_task_call``):
  a round of network I/O per submit that fire-and-forget callers never use.
  ``AsyncResult.get()`` subscribes by itself (``add_pending_result``) and then
  reads the stored meta once, so a result that landed first is still seen.
  Likewise a group's submit does not subscribe to each of its tasks (Celery's
  ready-barrier does); ``GroupResult.get()`` subscribes them when it waits.
* Storing a state is one Lua script (``store_result.lua``) instead of a GET (Celery's
  guard: never overwrite SUCCESS, so that a redelivered duplicate cannot clobber the
  result) followed by a SET+PUBLISH pipeline. The guard is now atomic as well, and the
  same round trip adds the task to the recent list that ``turbo ls`` reads,
  which used to be a third round trip in a ``task_prerun`` hook.
* The client keeps one connection of its pool (``single_connection_client``): no
  pool checkout per command, ~80 µs of each store. redis-py locks it across
  threads; a forked child (the prefork pool) drops the parent's client and its
  scripts and builds its own on first use (``os.register_at_fork``).
"""
from __future__ import annotations

import os
import time
import weakref

from celery import states
from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celeryapp.core import lua
from celeryapp.core.names import (
    RECENT_KEEP,
    RECENT_KEY,
)

from .stored import RedactedResultMeta, recent_member

STORE_SCRIPT = "store_result.lua"  # KEYS, ARGV and replies: in its header


# cached on a backend and bound to its client's socket: not to be used across fork
_PER_PROCESS = ("client", "_store_script", "_chord_part_return_script",
                "_chord_cleanup_script", "_chord_claim_extend_script")
_backends: weakref.WeakSet[TurboRedisBackend] = weakref.WeakSet()


def _forget_clients_in_child() -> None:
    for backend in list(_backends):
        for name in _PER_PROCESS:
            backend.__dict__.pop(name, None)


os.register_at_fork(after_in_child=_forget_clients_in_child)


class TurboRedisBackend(RedactedResultMeta, RedisBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _backends.add(self)

    def _create_client(self, **params):
        # a connection from before a Redis restart fails once ("closed by server"):
        # reconnect and ask again instead of raising to the caller (AsyncResult.state,
        # turbo status, workflow reads), three times with a short backoff
        params.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), 3))
        return self._get_client()(connection_pool=self._get_pool(**params),
                                  single_connection_client=True)

    def on_task_call(self, producer, task_id):
        pass

    def add_pending_result(self, result, weak=False, start_drainer=True):
        # Only Celery's group barrier asks weakly (canvas: ``res.then(p, weak=True)``),
        # which SUBSCRIBEs to every task of a group at submit, wanted or not.
        # GroupResult.get() subscribes its tasks itself (iter_native, below).
        if weak:
            return result
        return super().add_pending_result(result, weak=weak, start_drainer=start_drainer)

    def iter_native(self, result, no_ack=True, **kwargs):
        """A group's wait: subscribe its tasks now; results stored before that are read
        by Celery's own ``on_wait_for_pending`` (one MGET) as the wait begins."""
        waiting = [node for node in result.results
                   if isinstance(node, AsyncResult) and node._cache is None]
        if waiting:
            self.result_consumer.drainer.start()
            for node in waiting:
                super().add_pending_result(node, weak=True, start_drainer=False)
        return super().iter_native(result, no_ack=no_ack, **kwargs)

    @cached_property
    def _store_script(self):
        return self.client.register_script(lua.source(__package__, STORE_SCRIPT))

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        task_id = bytes_to_str(task_id)
        meta["task_id"] = task_id
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)
        ttl = self.failure_expires if state == states.FAILURE else self.expires
        args = (value, int(ttl or 0), recent_member(request, task_id), repr(time.time()),
                RECENT_KEEP)
        self.ensure(self._run_store_script, ([self.get_key_for_task(task_id), RECENT_KEY], args))
        return result

    def _run_store_script(self, keys, args):
        return self._store_script(keys=keys, args=args)


BACKEND = f"{__name__}:{TurboRedisBackend.__name__}"
OVERRIDES = {"redis": BACKEND, "rediss": BACKEND}
