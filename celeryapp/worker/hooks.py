"""Worker-side signal hooks: workflow progress and completion notices.

They run in the worker around each task; a hook that fails is logged by Celery
and never fails the task itself. (The hooks that need the runners - engines
preloaded before the pool forks, expired Parquet results swept - are in
``tasks/hooks.py``.)
"""
from __future__ import annotations

from celery import signals

from celeryapp import flows
from celeryapp.core.names import FLOW_HEADER, NOTIFY_HEADER, STEP_HEADER, header
from celeryapp.notices import notify_later, summary


@signals.task_prerun.connect
def _started(sender=None, task_id=None, task=None, **_):
    # other tasks enter the recent list with their first stored state (overrides/backend.py)
    request = task.request
    flow = header(request, FLOW_HEADER)
    if flow:
        flows.step_started(flow, header(request, STEP_HEADER), task_id, request.hostname,
                           request.retries + 1)


@signals.task_success.connect
def _succeeded(sender=None, result=None, **_):
    request = sender.request
    flow = header(request, FLOW_HEADER)
    if flow:
        flows.step_succeeded(flow, header(request, STEP_HEADER), request.id, result)
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
