"""Worker-side signal hooks: engines preloaded, workflow progress, completion notices.

They run in the worker after each task; a hook that fails is logged by Celery
and never fails the task itself.
"""
from __future__ import annotations

import logging

from celery import signals

log = logging.getLogger(__name__)

FLOW_HEADER = "turbo_flow"
STEP_HEADER = "turbo_step"
NOTIFY_HEADER = "turbo_notify"


def header(request, name: str):
    """A custom message header from a task's request (Context or worker Request)."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    if value is None and hasattr(request, "request_dict"):
        value = request.request_dict.get(name)
    return value


@signals.worker_init.connect
def _share_memory_with_children(**_):
    """In the main process, before the pool forks: load the engines once so every
    child shares their pages, then move what exists to a permanent GC generation so
    the children's collections do not touch (and so copy) those pages."""
    import gc

    import duckdb  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import tasks.engines.duckdb  # noqa: F401
    import tasks.results  # noqa: F401

    gc.collect()
    gc.freeze()


@signals.worker_ready.connect
def _sweep_spilled_results(**_):
    sweep_results()


def sweep_results() -> None:
    """Parquet results expire with the results that name them (TURBO_RESULT_EXPIRES)."""
    from tasks.results import sweep_expired

    from .config import get_settings

    settings = get_settings()
    removed = sweep_expired(settings.results_dir, settings.result_expires)
    if removed:
        log.info("removed %d expired result file(s) from %s", removed, settings.results_dir)


@signals.task_prerun.connect
def _started(sender=None, task_id=None, task=None, **_):
    # other tasks enter the recent list with their first stored state (backend.py)
    request = task.request
    flow = header(request, FLOW_HEADER)
    if flow:
        from . import flows

        flows.step_started(flow, header(request, STEP_HEADER), task_id, request.hostname,
                           request.retries + 1)


@signals.task_success.connect
def _succeeded(sender=None, result=None, **_):
    request = sender.request
    flow = header(request, FLOW_HEADER)
    if flow:
        from . import flows

        flows.step_succeeded(flow, header(request, STEP_HEADER), request.id, result)
    _notify_task(request, "SUCCESS", result)


@signals.task_failure.connect
def _failed(sender=None, task_id=None, exception=None, **_):
    request = sender.request
    error = f"{type(exception).__name__}: {exception}"
    flow = header(request, FLOW_HEADER)
    if flow:
        from . import flows

        flows.step_failed(flow, header(request, STEP_HEADER), task_id, error)
    _notify_task(request, "FAILURE", {"error": error})


@signals.task_revoked.connect
def _revoked(sender=None, request=None, **_):
    flow = header(request, FLOW_HEADER)
    if flow:
        from . import flows

        flows.step_revoked(flow, header(request, STEP_HEADER), request.id)
    _notify_task(request, "REVOKED", None)


def _notify_task(request, state: str, result) -> None:
    spec = header(request, NOTIFY_HEADER)
    if not spec or header(request, FLOW_HEADER):
        return  # a workflow notifies once, for the whole workflow
    from .flows import _summary
    from .notify import notify_later

    notify_later("task", request.id, state, _summary(result) if result else None, spec)
