"""The Celery base task: per-call timeouts become time limits, names become priorities,
transient errors are retried with backoff and jitter, permanent ones fail at once."""
from __future__ import annotations

import logging
import random
import time

from celery import Task
from celery.exceptions import Ignore

from celeryapp.config import get_settings
from celeryapp.constants import check_queue_name, host_queue, priority_value, time_limits
from celeryapp.notify import check_spec as check_notify

from .errors import InvalidRequest, TaskTimeout, TransientError

log = logging.getLogger(__name__)

# Options a caller may give in .delay(..., priority="high") next to task arguments
# (also host="alpha": the queue only that host consumes).
_ROUTING_KWARGS = ("priority", "queue")


class TurboTask(Task):
    abstract = True
    Request = "celeryapp.redaction:RedactingRequest"  # inspect reserved/scheduled: masked args
    default_timeout_setting = "query_timeout"
    max_timeout_setting = "query_max_timeout"

    # --- submit side ----------------------------------------------------------
    def apply_async(self, args=None, kwargs=None, **options):
        settings = get_settings()
        kwargs = dict(kwargs or {})
        for name in _ROUTING_KWARGS:
            if name in kwargs:
                options.setdefault(name, kwargs.pop(name))
        host = kwargs.pop("host", None)
        if host is not None:
            if options.get("queue"):
                raise InvalidRequest("give queue or host, not both")
            options["queue"] = host_queue(host)
        if isinstance(options.get("queue"), str):
            try:
                check_queue_name(options["queue"])
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        if kwargs.get("notify") is not None:
            try:
                spec = check_notify(kwargs.pop("notify"))
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
            options["headers"] = {**(options.get("headers") or {}), "turbo_notify": spec}
        kwargs.pop("notify", None)
        timeout = self.checked_timeout(kwargs.get("timeout"))
        # the runner's own deadline comes first, then Celery's soft and hard limits
        soft, hard = time_limits(timeout, settings.time_limit_grace)
        options.setdefault("soft_time_limit", soft)
        options.setdefault("time_limit", hard)
        try:
            options["priority"] = priority_value(options.get("priority"), settings.default_priority)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return super().apply_async(args, kwargs, **options)

    def checked_timeout(self, timeout) -> float:
        settings = get_settings()
        if timeout is None:
            return getattr(settings, self.default_timeout_setting)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        longest = getattr(settings, self.max_timeout_setting)
        if timeout > longest:
            raise InvalidRequest(
                f"timeout {timeout:g}s exceeds the maximum of {longest:g}s "
                f"(TURBO_{self.max_timeout_setting.upper()})")
        return float(timeout)

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


def check_retries(retries) -> int | None:
    if retries is None:
        return None
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidRequest(f"retries must be a whole number >= 0, got {retries!r}")
    return retries
