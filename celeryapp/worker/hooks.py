"""Worker-side signal hooks: workflow progress and completion notices.

They run in the worker around each task; a hook that fails is logged by Celery
and never fails the task itself. (The hooks that need the runners - engines
preloaded before the pool forks, expired Parquet results swept - are in
``tasks/hooks.py``.)
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading

from celery import signals

from celeryapp import flows
from celeryapp.core.names import EXPAND_HEADER, FLOW_HEADER, NOTIFY_HEADER, STEP_HEADER, header
from celeryapp.notices import notify_later, summary
from celeryapp.worker.delivery import start_step

log = logging.getLogger(__name__)


@signals.task_prerun.connect
def _started(sender=None, task_id=None, task=None, **_):
    # other tasks enter the recent list with their first stored state (overrides/backend.py)
    request = task.request
    flow = header(request, FLOW_HEADER)
    if flow:  # checked there: a step that ended already, a second copy of a running one
        start_step(task, flow)


@signals.task_success.connect
def _succeeded(sender=None, result=None, **_):
    request = sender.request
    flow = header(request, FLOW_HEADER)
    if flow:
        step = header(request, STEP_HEADER)
        if step and os.environ.get("TURBO_TEST_KILL_AFTER_STEP") == step:
            # the fault tests' kill point (never set in production): the step's result is
            # stored, its transition and its children's dispatch are not
            os.kill(os.getpid(), signal.SIGKILL)
        expands = header(request, EXPAND_HEADER)
        flows.step_succeeded(flow, step, request.id, result,
                             expands=None if expands is None else bool(int(expands)))
    _notify_task(request, "SUCCESS", result)


@signals.task_failure.connect
def _failed(sender=None, task_id=None, exception=None, **_):
    request = sender.request
    error = f"{type(exception).__name__}: {exception}"
    flow = header(request, FLOW_HEADER)
    if flow:
        flows.step_failed(flow, header(request, STEP_HEADER), task_id, error)
    _notify_task(request, "FAILURE", {"error": error})


@signals.task_revoked.connect
def _revoked(sender=None, request=None, **_):
    flow = header(request, FLOW_HEADER)
    if flow:
        flows.step_revoked(flow, header(request, STEP_HEADER), request.id)
    _notify_task(request, "REVOKED", None)


def _notify_task(request, state: str, result) -> None:
    spec = header(request, NOTIFY_HEADER)
    if not spec or header(request, FLOW_HEADER):
        return  # a workflow notifies once, for the whole workflow
    notify_later("task", request.id, state, summary(result) if result else None, spec)


# --- the workflow repair pass: a thread in each worker's main process -----------------------
_repair_stop = threading.Event()


@signals.worker_ready.connect
def _start_repair(sender=None, **_):
    from celeryapp.config import get_settings

    every = get_settings().flow_repair_interval
    if every <= 0:
        return
    _repair_stop.clear()
    holder = getattr(sender, "hostname", None) or str(os.getpid())
    threading.Thread(target=_repair_loop, args=(holder, every), name="turbo-flow-repair",
                     daemon=True).start()


@signals.worker_shutdown.connect
def _stop_repair(**_):
    _repair_stop.set()


def _repair_loop(holder: str, every: float) -> None:
    """Every ``every`` s (jittered), one worker across all runs flows.repair(): a short
    SET NX lock decides which. Errors are logged; the next turn tries again."""
    from celeryapp.flows.runtime import store

    while not _repair_stop.wait(every * random.uniform(0.8, 1.2)):
        try:
            if store().repair_turn(holder, every):
                done = flows.repair()
                if any(done[k] for k in ("settled", "republished", "started", "notices")):
                    log.warning("workflow repair pass: %s", done)
        except Exception as exc:  # noqa: BLE001 - Redis away: the next turn tries again
            log.warning("workflow repair pass failed: %r", exc)
