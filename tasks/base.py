"""The Celery base task: per-call timeouts become time limits, names become priorities,
transient errors are retried with backoff and jitter, permanent ones fail at once."""
from __future__ import annotations

import logging
import random
import time

from celery import Task
from celery.exceptions import Ignore

from celeryapp.config import get_settings
from celeryapp.core.policy import call_options, check_retries, check_timeout

from .errors import InvalidRequest, TaskTimeout, TransientError

log = logging.getLogger(__name__)

__all__ = ["TurboTask", "check_retries"]


class TurboTask(Task):
    abstract = True
    Request = "celeryapp.overrides.redaction:RedactingRequest"  # inspect reserved/scheduled: masked args
    kind = "query"  # whose timeout policy applies: TURBO_QUERY_* or TURBO_AGENT_*

    # --- submit side ----------------------------------------------------------
    def apply_async(self, args=None, kwargs=None, **options):
        """Checked by the request policy (celeryapp.core.policy) before anything is sent."""
        kwargs, options = call_options(kwargs, options, get_settings().limits(self.kind))
        return super().apply_async(args, kwargs, **options)

    def checked_timeout(self, timeout) -> float:
        try:
            return check_timeout(timeout, get_settings().limits(self.kind))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    # --- worker side ------------------------------------------------------------
    def retry_transient(self, exc: TransientError, retries: int | None):
        """Retry ``exc`` with exponential backoff and jitter, or raise it when spent."""
        settings = get_settings()
        budget = settings.max_retries if retries is None else retries
        attempt = self.request.retries
        if attempt >= budget:
            log.warning("%s[%s] giving up after %d attempts: %s",
                        self.name, self.request.id, attempt + 1, exc)
            raise exc
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * (2 ** attempt))
        countdown = random.uniform(ceiling / 2, ceiling)
        log.info("%s[%s] transient error, retry %d/%d in %.2fs: %s",
                 self.name, self.request.id, attempt + 1, budget, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown, max_retries=budget)

    def stopped(self, what: str, started: float) -> Exception:
        """What to raise after SoftTimeLimitExceeded, once the work was cancelled.

        The same signal means "soft time limit" or "revoke(terminate=True,
        signal='SIGUSR1')"; before the soft limit it can only be a revoke, whose
        REVOKED state the worker has stored already: keep it (Ignore).
        """
        soft = (self.request.timelimit or (None, None))[1]
        elapsed = time.monotonic() - started
        if soft is None or elapsed < float(soft) - 0.5:
            log.warning("%s[%s] revoked after %.1fs: %s cancelled at the source",
                        self.name, self.request.id, elapsed, what)
            return Ignore()
        return TaskTimeout(f"{what} stopped by the soft time limit ({float(soft):g}s) "
                           f"and cancelled at the source")

