"""Custom inspect/control commands: what runs where, and cancelling one task.

The app imports this module (``celeryapp.factory``), so the worker registers
the commands and the CLI knows them::

    celery -A celeryapp inspect running_queries [--json] [-d worker@alpha]
    celery -A celeryapp inspect running_agents  [--json]
    celery -A celeryapp control cancel_task <task_id> [-d worker@alpha]

Commands run in the worker's main process; the tasks run in prefork children,
which describe themselves in :mod:`celeryapp.worker.running` files (fed by the
``task_prerun``/``task_postrun`` hooks below, plus the engine's statement id
and the agent CLI's pid when the task code reports them).
"""
from __future__ import annotations

import inspect as _pyinspect
import logging
import os

from celery import signals
from celery.worker import state as worker_state
from celery.worker.control import control_command, inspect_command, nok, ok
from celery.worker.control import revoke as _revoke

from celeryapp.config import get_settings
from celeryapp.core.names import AGENT_TASK, QUERY_TASK
from celeryapp.worker import running

log = logging.getLogger(__name__)

CANCEL_SIGNAL = "SIGUSR1"  # the soft-limit path: the task cancels at the source, REVOKED
KINDS = {QUERY_TASK: "query", AGENT_TASK: "agent"}


# --- feeding the registry (in the process that runs the task) -------------------------
def _arguments(task, args, kwargs) -> dict:
    try:
        bound = _pyinspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return dict(kwargs or {})
    return dict(bound.arguments)


@signals.task_prerun.connect
def _register(sender=None, task_id=None, task=None, args=None, kwargs=None, **_):
    kind = KINDS.get(getattr(sender, "name", None))
    if kind is None or task.request.is_eager:  # eager: no worker to ask
        return
    worker = task.request.hostname or "unknown"
    given = _arguments(task, args, kwargs)
    if kind == "query":
        info = {"engine": given.get("engine") or get_settings().default_engine,
                "sql": running.preview(given.get("sql")), "statement_id": None,
                "pid": os.getpid()}
    else:
        info = {"profile": given.get("profile") or "claude",
                "prompt": running.preview(given.get("prompt")), "pid": None}
    try:
        running.register(kind, task_id, worker=worker, **info)
    except OSError:
        log.warning("could not record running task %s", task_id, exc_info=True)


@signals.task_postrun.connect
def _unregister(sender=None, task_id=None, **_):
    if task_id:
        running.unregister(task_id)


@signals.worker_process_init.connect
def _pool_child(**_):
    running.set_main_pid(os.getppid())


@signals.worker_ready.connect
def _fresh_start(sender=None, **_):
    # nothing runs yet; folders of workers that died are swept as well
    running.clear(sender.hostname)


@signals.worker_shutdown.connect
def _stopped(sender=None, **_):
    running.clear(getattr(sender, "hostname", None) or "")


# --- the commands (in the worker's main process) --------------------------------------
def _entries(state, kind: str) -> list[dict]:
    return list(running.entries(state.consumer.hostname, kind))


@inspect_command()
def running_queries(state, **kwargs):
    """Running SQL statements: engine, statement id, elapsed, SQL preview, task id."""
    return [{key: entry.get(key) for key in
             ("task_id", "engine", "statement_id", "elapsed_s", "sql", "pid", "started")}
            for entry in _entries(state, "query")]


@inspect_command()
def running_agents(state, **kwargs):
    """Running agent CLIs: profile, CLI pid, elapsed, prompt preview, task id."""
    replies = []
    for entry in _entries(state, "agent"):
        pid = entry.get("pid")
        if not pid:  # not reported by the runner: the pool child's own child is the CLI
            found = running.children(entry["worker_pid"])
            pid = found[0] if len(found) == 1 else None
        replies.append({"task_id": entry.get("task_id"), "profile": entry.get("profile"),
                        "pid": pid, "worker_pid": entry.get("worker_pid"),
                        "elapsed_s": entry.get("elapsed_s"), "prompt": entry.get("prompt"),
                        "started": entry.get("started")})
    return replies


@control_command(args=[("task_id", str)], signature="<task_id>")
def cancel_task(state, task_id, **kwargs):
    """Cancel one task at the source (statement cancel / agent group kill); it ends REVOKED."""
    request = worker_state.requests.get(task_id)
    if request is None:
        return nok(f"task {task_id} is not running on {state.consumer.hostname}")
    described = next((entry for entry in running.entries(state.consumer.hostname)
                      if entry.get("task_id") == task_id), {})
    active = request in worker_state.active_requests
    # revoke + terminate: REVOKED stored, message acked, id kept in the statedb;
    # SIGUSR1 reaches the task as SoftTimeLimitExceeded, which cancels at the source
    # and frees the pool slot as soon as the task returns
    _revoke(state, task_id, terminate=active, signal=CANCEL_SIGNAL)
    log.warning("cancel_task %s (%s): %s", task_id, request.name,
                f"{CANCEL_SIGNAL} sent to pid {request.worker_pid}" if active
                else "not started yet, discarded")
    return ok({"task_id": task_id, "name": request.name,
               "state": "terminating" if active else "revoked before start",
               "signal": CANCEL_SIGNAL if active else None,
               "worker_pid": request.worker_pid if active else None,
               "kind": described.get("kind"), "elapsed_s": described.get("elapsed_s")})
