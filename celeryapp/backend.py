"""Celery's Redis result backend, subscribing to a result only when someone waits.

The stock backend SUBSCRIBEs to every task's result channel inside ``delay()``
(``on_task_call``), a round of network I/O per submit that fire-and-forget
callers never use. ``AsyncResult.get()`` subscribes by itself
(``add_pending_result``) and then reads the stored meta once, so a result that
landed before the subscription is still seen.
"""
from __future__ import annotations

from celery.backends.redis import RedisBackend


class LazySubscribeRedisBackend(RedisBackend):
    def on_task_call(self, producer, task_id):
        pass


BACKEND = f"{__name__}:{LazySubscribeRedisBackend.__name__}"
OVERRIDES = {"redis": BACKEND, "rediss": BACKEND}
