"""The worker's request class: redacted ``info()`` (:mod:`.redaction`), and a bound on
how often a task may take its worker process down with it.

With ``task_acks_late`` and ``task_reject_on_worker_lost`` a task whose pool process
died (OOM kill, a segfault in a driver, ``kill -9``) is requeued - at the head of its
queue, counted in its ``turbo_requeues`` header (:class:`.transport.QoS`). A task that
kills every process that runs it (a poison message) would loop forever; once it has
been requeued ``TURBO_WORKER_LOST_REQUEUES`` times, the next death ends it FAILURE with
:class:`~celeryapp.core.errors.TaskCrashed`, acknowledged, stored and announced as
Celery does for any failure. (Under TURBO_STOCK_CELERY kombu requeues at the back and
counts nothing: no bound.)
"""
from __future__ import annotations

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError

from celeryapp.config import get_settings
from celeryapp.core.errors import TaskCrashed
from celeryapp.core.names import REQUEUES_HEADER

from .redaction import RedactingRequest


class TurboRequest(RedactingRequest):
    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if (isinstance(exc, WorkerLostError) and self.task.acks_late
                and self.task.reject_on_worker_lost):
            requeues = int((self.request_dict or {}).get(REQUEUES_HEADER) or 0)
            limit = get_settings().worker_lost_requeues
            if requeues >= limit:
                try:
                    raise TaskCrashed(
                        f"the worker process running {self.name} died {requeues + 1} times "
                        f"({exc}); not requeued again (TURBO_WORKER_LOST_REQUEUES={limit})")
                except TaskCrashed:
                    exc_info = ExceptionInfo()
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)
