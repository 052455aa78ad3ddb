"""``turbo.agent``: one headless agent CLI run (claude, codex, gemini) on a worker.

The task is thin: it validates, takes a per-host slot, calls the runner and maps
errors onto Celery. A busy host re-queues the task without spending its retry
budget: the wait is counted in the ``turbo_slot_waits`` message header and the
Celery ``retries`` count stays as it was, so ``retries`` keeps meaning "attempts
that failed for a transient reason" (rate limits), as in ``turbo.query``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from celeryapp import app
from celeryapp.config import get_settings
from celeryapp.core import backoff
from celeryapp.core.agent_options import DEFAULT_PROFILE, OPTION_NAMES, check_request
from celeryapp.core.names import AGENT_TASK
from celeryapp.worker import running

from .agents import runner
from .agents.request import AgentRequest
from .agents.sandbox import Caps
from .agents.slots import HostSlots
from .base import TurboTask, check_retries
from .errors import SlotsBusy, TransientError, TurboError

log = logging.getLogger(__name__)

SLOT_WAIT_S = 5.0            # waited in the worker process before re-queueing
SLOT_RETRY_BASE_S = 1.0      # first re-queue delay, x1.5 per wait, jittered
SLOT_RETRY_MAX_S = 30.0
SLOT_WAIT_LIMIT_FACTOR = 4   # give up after 4 x TURBO_AGENT_MAX_TIMEOUT of waiting
KILL_GRACE_MAX_S = 5.0
SLOT_WAITS = "turbo_slot_waits"
SLOT_WAIT_SINCE = "turbo_slot_wait_since"
# what earlier attempts of the same run spent (reported with the last one)
API_CALLS = "turbo_agent_api_calls"
COST = "turbo_agent_cost_usd"


class AgentTask(TurboTask):
    """Agent timeouts (TURBO_AGENT_TIMEOUT / TURBO_AGENT_MAX_TIMEOUT) and early validation."""
    abstract = True
    kind = "agent"

    def apply_async(self, args=None, kwargs=None, **options):
        # Refuse a bad profile or option before it travels through Redis.
        args, kw = tuple(args or ()), dict(kwargs or {})
        prompt = args[0] if args else kw.get("prompt")
        profile = args[1] if len(args) > 1 else kw.get("profile", DEFAULT_PROFILE)
        check_request(prompt, profile, {name: kw.get(name) for name in OPTION_NAMES},
                      get_settings().agent_max_prompt_bytes)
        check_retries(kw.get("retries"))
        return super().apply_async(args, kwargs, **options)

    def spent(self, this: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Attempts, API calls and cost of this run so far, earlier attempts included."""
        headers, this = self.request.headers or {}, this or {}
        calls = int(headers.get(API_CALLS) or 0) + int(this.get("api_calls") or 0)
        cost = float(headers.get(COST) or 0) + float(this.get("cost_usd") or 0)
        return {"attempts": self.request.retries + 1, "api_calls_total": calls,
                "cost_usd_total": round(cost, 6)}

    def spent_text(self, spent: Mapping[str, Any]) -> str:
        return f"{spent['attempts']} attempts and {spent['api_calls_total']} API calls"

    def carried(self, spent: Mapping[str, Any]) -> dict[str, Any]:
        return {API_CALLS: spent["api_calls_total"], COST: spent["cost_usd_total"]}

    def requeue_for_slot(self, exc: SlotsBusy):
        """Send this request again later without counting a retry; raise Retry."""
        request = self.request
        headers = dict(request.headers or {})
        waits = int(headers.get(SLOT_WAITS) or 0)
        since = float(headers.get(SLOT_WAIT_SINCE) or time.time())
        limit = SLOT_WAIT_LIMIT_FACTOR * get_settings().agent_max_timeout
        if time.time() - since > limit:
            log.warning("%s[%s] no agent slot after %.0fs of waiting; giving up",
                        self.name, request.id, time.time() - since)
            raise exc
        countdown = backoff.pause(waits, SLOT_RETRY_BASE_S, SLOT_RETRY_MAX_S, factor=1.5)
        headers.update({SLOT_WAITS: waits + 1, SLOT_WAIT_SINCE: since})
        # signature_from_request keeps retries, time limits, routing and priority
        signature = self.signature_from_request(request, countdown=countdown, headers=headers)
        try:
            signature.apply_async()
        except Exception as error:
            raise Reject(error, requeue=False) from error
        log.info("%s[%s] waiting for an agent slot (wait %d), again in %.1fs",
                 self.name, request.id, waits + 1, countdown)
        raise Retry(exc=exc, when=countdown, sig=signature)


def _note_pid(pid: int) -> None:
    running.note(pid=pid)  # for `celery inspect running_agents`


@app.task(bind=True, base=AgentTask, name=AGENT_TASK)
def run_agent(self, prompt: str, profile: str = DEFAULT_PROFILE, *, cwd: str | None = None,
              model: str | None = None, max_turns: int | None = None,
              allowed_tools: list[str] | None = None, permission_mode: str | None = None,
              append_system_prompt: str | None = None, resume: str | None = None,
              keep_session: bool | None = None, keep_workdir: bool | None = None,
              timeout: float | None = None, retries: int | None = None) -> dict:
    """Run ``prompt`` through an agent CLI headless; return its answer, cost and session.

    The run gets a scratch directory of its own unless ``cwd`` (under the worker's
    TURBO_AGENT_CWD_ROOTS) is given. ``timeout`` covers every attempt. Failures
    raise with ``details`` (session id, turns, cost, usage, attempts, API calls):
    AgentTurnLimit (resume with ``resume=details["session_id"]``), AgentAuthError,
    AgentError, AgentNotFound, TaskTimeout, InvalidRequest; rate limits (429/529)
    and an unreachable API are retried with backoff up to ``retries`` (default
    TURBO_MAX_RETRIES) while the timeout allows, then AgentRateLimited /
    AgentUnavailable.
    """
    started = time.monotonic()
    settings = get_settings()
    retries = check_retries(retries)
    timeout = self.checked_timeout(timeout)
    options = {"model": model, "max_turns": max_turns, "allowed_tools": allowed_tools,
               "permission_mode": permission_mode, "append_system_prompt": append_system_prompt,
               "resume": resume, "keep_session": keep_session, "keep_workdir": keep_workdir}
    # The Celery soft limit is timeout + grace and also covers the slot wait and
    # the kill grace: keep both well inside that grace.
    grace = min(KILL_GRACE_MAX_S, settings.time_limit_grace / 3)
    # the worker side's one check, whoever sent the message (delay(), turbo, send_task)
    request = AgentRequest.checked(profile, prompt, options, cwd=cwd,
                                   caps=Caps.from_settings(settings, kill_grace=grace),
                                   prompt_limit=settings.agent_max_prompt_bytes)
    chosen = request.profile
    budget = self.budget(timeout)
    slots = HostSlots(settings.agent_slots_dir / settings.host, settings.agent_slots)
    # threads pool: a revoke sets this event (no signal reaches a thread); prefork: unused
    stop = running.stop_event()
    try:
        left = self.attempt_timeout(budget, f"{chosen.name} agent run")
        with slots.acquire(min(SLOT_WAIT_S, left, grace), note=f"task {self.request.id}",
                           stop=stop):
            result = runner.run(request, executable=getattr(settings, chosen.setting),
                                timeout=left, on_spawn=_note_pid, stop=stop)
    except SlotsBusy as exc:
        self.requeue_for_slot(exc)
    except SoftTimeLimitExceeded as exc:
        # soft limit -> TaskTimeout; revoke(terminate=True, signal="SIGUSR1") -> stays REVOKED
        raise self.stopped(f"{chosen.name} agent run", started) from exc
    except TurboError as exc:
        spent = self.spent(exc.details)
        exc.add_details(**spent, host=settings.host, task_id=self.request.id)
        if isinstance(exc, TransientError):
            self.retry_within(exc, retries, budget, spent)
        raise
    spent = self.spent(result)
    result.update(spent, task_id=self.request.id, worker=self.request.hostname,
                  host=settings.host,
                  slot_waits=int((self.request.headers or {}).get(SLOT_WAITS) or 0))
    return result
