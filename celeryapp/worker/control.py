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

**Stopping a task on a threads pool** (the io worker). Celery's
``revoke(terminate=True)`` calls ``pool.terminate_job(pid, signal)``, which the
threads pool does not implement (a thread cannot be signalled): the revoke would
fail before the task is marked REVOKED. On a pool without ``terminate_job`` the
worker gets one that only logs (:func:`_in_process_pool`), so Celery goes on
exactly as on prefork - REVOKED stored, message acked, id kept in the statedb, the
``task_revoked`` signal sent - and the ``task_revoked`` hook below sets the task's
stop event (:func:`celeryapp.worker.running.cancel`): the runner waiting on it
interrupts the statement / kills the agent's process group, and the task ends
keeping its REVOKED state (``tasks.base.TurboTask``). Every stop takes that path:
``revoke(terminate=True)`` with any signal, ``turbo cancel``, ``cancel_task``, a
workflow's cancel; so does Celery's cancel of running tasks on a broker connection
loss (``task_retry`` without an error). Prefork is unchanged: signals, as before.
"""
from __future__ import annotations

import inspect as _pyinspect
import logging
import os

from celery import signals
from celery.concurrency.base import BasePool
from celery.worker import state as worker_state
from celery.worker.control import control_command, inspect_command, nok, ok
from celery.worker.control import revoke as _revoke

from celeryapp.config import get_settings
from celeryapp.core.names import AGENT_TASK, QUERY_TASK
from celeryapp.worker import running

log = logging.getLogger(__name__)

CANCEL_SIGNAL = "SIGUSR1"  # the soft-limit path: the task cancels at the source, REVOKED
KINDS = {QUERY_TASK: "query", AGENT_TASK: "agent"}
_stops_by_event = False  # True in a worker whose pool runs tasks in this process (threads)


# --- feeding the registry (in the process that runs the task) -------------------------
_signatures: dict[str, _pyinspect.Signature] = {}


def _arguments(task, args, kwargs) -> dict:
    try:
        signature = _signatures.get(task.name)
        if signature is None:
            signature = _signatures[task.name] = _pyinspect.signature(task.run)
        bound = signature.bind_partial(*(args or ()), **(kwargs or {}))
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
    _in_process_pool(getattr(sender, "pool", None))


def _in_process_pool(pool) -> None:
    """A pool that cannot terminate a job (threads, solo) gets a ``terminate_job`` that
    lets Celery's revoke go on; the task is stopped through its event instead."""
    global _stops_by_event
    # prefork sets its own terminate_job on the instance when it starts (billiard's);
    # gevent/eventlet define one; threads and solo keep BasePool's, which raises
    own = getattr(getattr(pool, "terminate_job", None), "__func__", None)
    if pool is None or own is not BasePool.terminate_job:
        return

    def terminate_job(pid, signal=None):
        log.info("%s pool: no signal for a thread; the revoked task is stopped through "
                 "its stop event (cancelled at the source)", type(pool).__module__)

    pool.terminate_job = terminate_job
    _stops_by_event = True
    running.keep_in_memory()  # the inspect commands run in this very process


@signals.task_revoked.connect
def _stop_revoked(sender=None, request=None, terminated=False, **_):
    # revoke(terminate=True): Celery stored REVOKED and acked; stop the work at the source
    if _stops_by_event and terminated and request is not None:
        running.cancel(request.id)


@signals.task_retry.connect
def _stop_cancelled(sender=None, request=None, einfo=None, **_):
    # a retry without an error is Celery cancelling a running task (broker connection
    # lost: its message is delivered again): on prefork its process is killed; here the
    # work stops at the source. Only a task that runs: no early stop for a redelivery.
    if _stops_by_event and einfo is None and request is not None:
        running.cancel(request.id, early=False)


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
    main = os.getpid()
    for entry in _entries(state, "agent"):
        pid = entry.get("pid")
        if not pid and entry["worker_pid"] != main:
            # not reported by the runner yet: a prefork child's only child is the CLI
            # (a threads pool's process has the CLIs of every task as children)
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
    # prefork: SIGUSR1 reaches the task as SoftTimeLimitExceeded, which cancels at the
    # source and frees the pool slot as soon as the task returns; threads: the
    # task_revoked hook sets the task's stop event, with the same effect
    _revoke(state, task_id, terminate=active, signal=CANCEL_SIGNAL)
    by_event = active and _stops_by_event
    if by_event:
        running.cancel(task_id)  # set already by the task_revoked hook; no harm twice
    log.warning("cancel_task %s (%s): %s", task_id, request.name,
                "stop event set" if by_event
                else f"{CANCEL_SIGNAL} sent to pid {request.worker_pid}" if active
                else "not started yet, discarded")
    return ok({"task_id": task_id, "name": request.name,
               "state": "terminating" if active else "revoked before start",
               "signal": CANCEL_SIGNAL if active and not by_event else None,
               "stop": ("event" if by_event else "signal") if active else None,
               "worker_pid": request.worker_pid if active else None,
               "kind": described.get("kind"), "elapsed_s": described.get("elapsed_s")})
