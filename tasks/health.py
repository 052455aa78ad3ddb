"""``turbo.health.ping``: the tiny task the liveness check sends to a worker's host queue.

It proves the whole path: the worker takes a message from Redis, a pool process
runs it, and its answer comes back through Redis. The answer goes to a short-lived
key of its own (``turbo:health:<task id>``), not to Celery's result backend: a
ping that expired unrun, or ran after the check gave up, leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import time

from celeryapp import app
from celeryapp.core.names import HEALTH_REPLY_KEY as REPLY_KEY
from celeryapp.core.names import PING_TASK

REPLY_TTL_S = 300


@app.task(bind=True, name=PING_TASK, ignore_result=True, track_started=False, acks_late=False,
          soft_time_limit=10, time_limit=20)
def ping(self, sent: float | None = None) -> dict:
    """Answer with the worker that ran it, its pool pid and the queue wait."""
    now = time.time()
    reply = {"worker": self.request.hostname, "pid": os.getpid(), "time": now,
             "waited_s": round(now - sent, 3) if sent else None}
    self.app.backend.client.set(REPLY_KEY.format(id=self.request.id), json.dumps(reply),
                                ex=REPLY_TTL_S)
    return reply
