"""The Celery base task: per-call timeouts become time limits, names become priorities,
queries and agent runs are routed to the worker that suits them, transient errors are
retried with backoff and jitter within the caller's timeout (one budget for the whole
call, :mod:`tasks.budget`), permanent ones fail at once, and a stop on request (revoke
with terminate, cancel_task, a workflow's cancel) keeps the REVOKED state on prefork
(signals) and threads pools (the task's stop event) alike."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery.exceptions import Ignore

from celeryapp.config import get_settings
from celeryapp.core import backoff
from celeryapp.core.names import AGENT_TASK, QUERY_TASK
from celeryapp.core.policy import call_options, check_retries, check_timeout
from celeryapp.worker import running
from celeryapp.worker.delivery import CheckedTask

from . import deadline
from .budget import Budget
from .deadline import Cancelled
from .errors import InvalidRequest, TaskTimeout, TransientError

log = logging.getLogger(__name__)

__all__ = ["TurboTask", "check_retries"]

# the runners find the stop event of the task their thread runs (threads pool cancel)
deadline.set_stop_source(running.stop_event)


# what a query or an agent run would get as its first argument if a parent fed it
FED_ARGUMENT = {QUERY_TASK: "SQL", AGENT_TASK: "prompt"}


def refuse_fed_signatures(options: dict) -> None:
    """A ``run_query.s()`` / ``run_agent.s()`` that follows another step (a chain's next
    link, a ``link`` callback, a chord's body) gets that step's result as its SQL or
    prompt: refused before anything is sent, naming the fix (``.si()``). Without this
    the first step ran, then failed while sending the next one."""
    fed = list(options.get("chain") or [])
    link = options.get("link")
    fed += list(link) if isinstance(link, (list, tuple)) else [link] if link else []
    if options.get("chord"):
        fed.append(options["chord"])
    for signature in fed:
        name = signature.get("task") if isinstance(signature, dict) else None
        if name in FED_ARGUMENT and not signature.get("immutable"):
            raise InvalidRequest(
                f"{name} after another step (a chain's next link, a link callback or a "
                f"chord's body) would get that step's result as its {FED_ARGUMENT[name]}: "
                f"use .si(...) with its own arguments, or a task of yours that takes the "
                f"result")


class TurboTask(CheckedTask):
    abstract = True
    Request = "celeryapp.overrides.request:TurboRequest"  # inspect reserved/scheduled: masked args
    kind = "query"  # whose timeout policy applies: TURBO_QUERY_* or TURBO_AGENT_*

    # --- submit side ----------------------------------------------------------
    def apply_async(self, args=None, kwargs=None, **options):
        """Checked and routed by the request policy (celeryapp.core.policy) before
        anything is sent: a DuckDB query to ``queries`` (prefork), a Databricks one to
        ``warehouse``, an agent run to ``agents`` (the io worker); ``host=`` to that
        host's worker of the same kind."""
        refuse_fed_signatures(options)
        settings = get_settings()
        kwargs, options = call_options(kwargs, options, settings.limits(self.kind),
                                       task=self.name, args=args or (),
                                       default_engine=settings.default_engine)
        return super().apply_async(args, kwargs, **options)

    # --- worker side: the body ---------------------------------------------------
    def __call__(self, *args, **kwargs):
        """The body, plus the threads pool's revoke: a runner stopped by the task's
        stop event raises Cancelled, and a body that outran a set stop event returns
        a result nobody asked for any more; both keep the REVOKED state (Ignore).
        Deliveries that must not run are acknowledged unrun first (CheckedTask)."""
        started = time.monotonic()
        try:
            result = super().__call__(*args, **kwargs)
        except Cancelled as exc:
            raise self.cancelled(str(exc), started) from exc
        stop = running.stop_event()
        if stop is not None and stop.is_set():
            raise self.cancelled("its result discarded", started)
        return result

    def checked_timeout(self, timeout) -> float:
        try:
            return check_timeout(timeout, get_settings().limits(self.kind))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    # --- worker side: the caller's timeout covers the whole call ------------------------
    def budget(self, timeout: float) -> Budget:
        """This call's budget: ``timeout`` from when its first attempt started (a retry's
        message carries that)."""
        return Budget.of_attempt(timeout, self.request.headers)

    def attempt_timeout(self, budget: Budget, what: str) -> float:
        """This attempt's deadline in seconds: what was left of ``budget`` when it started.
        A retry that finds less than a minimal attempt left (its message waited, or came
        back after a worker died) is not started: TaskTimeout."""
        if self.request.retries and budget.at_start < budget.min_attempt:
            raise TaskTimeout(f"{what}: its timeout of {budget.timeout:g}s was spent before "
                              f"this attempt", self.spent())
        return budget.at_start

    def spent(self, this: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the call took so far, earlier attempts included (``this``: the current
        attempt's result or error details); goes into the details of its error."""
        return {"attempts": self.request.retries + 1}

    def spent_text(self, spent: Mapping[str, Any]) -> str:
        return f"{spent['attempts']} attempts"

    def carried(self, spent: Mapping[str, Any]) -> dict[str, Any]:
        """Headers a retry carries for the next attempt's :meth:`spent` (none here)."""
        return {}

    def retry_within(self, exc: TransientError, retries: int | None, budget: Budget,
                     spent: Mapping[str, Any] | None = None):
        """Retry ``exc`` with exponential backoff and jitter if retries remain and the
        pause plus a minimal attempt fit in what is left of the caller's timeout; else
        raise it, saying after how many attempts and how long it gave up, and why."""
        settings = get_settings()
        retries = settings.max_retries if retries is None else retries
        attempt = self.request.retries
        spent = self.spent(exc.details) if spent is None else spent
        countdown = backoff.pause(attempt, settings.retry_backoff, settings.retry_backoff_max)
        if attempt >= retries or not budget.fits(countdown):
            why = (f"{retries} retries spent" if attempt >= retries else
                   f"another attempt would not fit in the timeout of {budget.timeout:g}s")
            log.warning("%s[%s] giving up after %s: %s: %s", self.name, self.request.id,
                        self.spent_text(spent), why, exc)
            exc.add_details(**spent, gave_up=why)
            raise type(exc)(f"{exc.message}\n(gave up after {self.spent_text(spent)} in "
                            f"{budget.elapsed():.1f}s: {why})", exc.details) from None
        log.info("%s[%s] transient error, retry %d/%d in %.2fs (%.0fs of the timeout left): "
                 "%s: %s", self.name, self.request.id, attempt + 1, retries, countdown,
                 budget.left() - countdown, type(exc).__name__, exc)
        headers = {**(self.request.headers or {}), **budget.headers(), **self.carried(spent)}
        raise self.retry(exc=exc, countdown=countdown, max_retries=retries, headers=headers)

    def cancelled(self, what: str, started: float) -> Exception:
        """What to raise once a stop on request (threads pool: the task's stop event)
        cancelled the work: Ignore, the REVOKED state stored by the worker stays."""
        log.warning("%s[%s] revoked after %.1fs: %s (cancelled at the source)",
                    self.name, self.request.id, time.monotonic() - started, what)
        return Ignore()

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

