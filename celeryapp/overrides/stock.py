"""``TURBO_STOCK_CELERY=1``: kombu's and Celery's own Redis classes, with the redaction kept.

A way out for a user hit by a regression in the overrides: the transport and the
worker consumer are kombu's and Celery's own (``celeryapp/factory.py``), the result
backend is Celery's plus what the project does not give up (:mod:`.stored`), and the
message hooks redact without the declare shortcut.
"""
from __future__ import annotations

import logging
import time

from celery.app.amqp import AMQP
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str

from celeryapp.core.names import RECENT_KEEP, RECENT_KEY

from .redaction import RedactingAMQP
from .stored import RedactedResultMeta, recent_member

logger = logging.getLogger(__name__)


class StockRedisBackend(RedactedResultMeta, RedisBackend):
    """Celery's own Redis result backend (GET, then SET+PUBLISH; subscribes at submit),
    plus what the project does not give up in stock mode: the task's args stored with
    ``result_extended`` are redacted (``Backend._get_result_meta``, the one private
    name here), and each task enters the recent list ``turbo ls`` reads - one more
    round trip per stored state, which the overriding backend saves."""

    def store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        stored = super().store_result(task_id, result, state, traceback=traceback,
                                      request=request, **kwargs)
        member = recent_member(request, bytes_to_str(task_id))
        if member:
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.zadd(RECENT_KEY, {member: time.time()}, nx=True)
                    pipe.zremrangebyrank(RECENT_KEY, 0, -RECENT_KEEP - 1)
                    pipe.execute()
            except Exception as exc:  # noqa: BLE001 - the state is stored; only `turbo ls` misses it
                logger.warning("could not add %s to the recent list: %r", member, exc)
        return stored


class StockAMQP(RedactingAMQP):
    """Redacted argsrepr/kwargsrepr and task-sent event, with Celery's own task sender
    (kombu declares the queue with every message, as stock Celery does)."""

    def _create_task_sender(self):
        return AMQP._create_task_sender(self)


STOCK_BACKEND = f"{__name__}:{StockRedisBackend.__name__}"
STOCK_BACKENDS = {"redis": STOCK_BACKEND, "rediss": STOCK_BACKEND}
STOCK_AMQP = f"{__name__}:{StockAMQP.__name__}"
