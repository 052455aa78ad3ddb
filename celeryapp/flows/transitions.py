"""A workflow's transitions, and what follows them: the claimed steps published, the notice
of a workflow that ended sent.

A step's task carries ``turbo_flow`` and ``turbo_step`` headers; when it starts or ends, a
worker hook (celeryapp.worker.hooks, .delivery) calls :func:`step_started`,
:func:`step_succeeded`, ... Each is one command of flows.lua (:class:`.store.FlowStore`):
it records the outcome, decrements each child's pending-needs counter and claims the
children that reached zero - Celery's Redis chord counter, generalised to any DAG. The
claimed children are then published outside any lock (templates rendered only where a
step has them: :mod:`.rendering`). A failed step skips its descendants; independent
branches run on. Every transition is idempotent (checked against the step's state and
task id) and retried while Redis is unreachable; the repair pass (:mod:`.repair_pass`)
applies those whose hook never ran.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from ..config import get_settings
from ..core.names import AGENT_TASK, EXPAND_HEADER, FLOW_HEADER, QUERY_TASK, STEP_HEADER
from ..core.policy import priority_value, route
from ..core.text import as_text
from ..notices import notify_later, summary
from ..submit import batch, registered
from . import rendering, runtime
from .replies import Claimed, Conflict, StartReply
from .spec import FlowSpecError, StepSpec
from .store import FlowStore

log = logging.getLogger(__name__)


def start(flow_id: str) -> list[str]:
    """Claim and submit every pending step whose needs all succeeded; return their names.
    (The start of a workflow, and the repair pass's backstop; O(steps), once.)"""
    store = runtime.store()
    return _after(store, flow_id, store.start(flow_id, time.time()))


def step_started(flow_id: str, step_name: str, task_id: str, worker: str, attempt: int,
                 tag: str = "", take_over: bool = False) -> StartReply:
    """Record that the message ``tag`` starts this attempt of the step; the reply says
    whether it is to run (:class:`.replies.Start`: a copy of an attempt another message
    started runs only once that message's holder is dead - celeryapp/worker/delivery.py -
    and then again with ``take_over``)."""
    result_key = as_text(runtime.app().backend.get_key_for_task(task_id))
    return runtime.store().started(flow_id, step_name, task_id, time.time(), worker, attempt,
                                   tag, take_over, result_key=result_key)


def step_succeeded(flow_id: str, step_name: str, task_id: str, result: Any,
                   expands: bool | None = None) -> None:
    """Record the success, add the steps it asks for (expansion: callbacks, validation and
    rendering run here, outside any lock; the steps are added by the same command that
    records the success), then publish the children that became ready."""
    store = runtime.store()
    added = ""
    if expands is None or expands:
        try:
            added = rendering.expansion(store, flow_id, step_name, result)
        except Exception as exc:  # noqa: BLE001 - an invalid or failing expansion fails this step
            problem = str(exc) if isinstance(exc, FlowSpecError) else \
                f"{type(exc).__name__}: {exc}"
            _fail(store, flow_id, step_name, task_id,
                  f"its follow-up steps are invalid: {problem}")
            return
    reply = store.succeeded(flow_id, step_name, task_id, time.time(),
                            json.dumps(summary(result), default=str), added)
    if isinstance(reply, Conflict):
        _fail(store, flow_id, step_name, task_id, "its follow-up steps are invalid: added "
              f"step(s) {', '.join(reply.names)} already exist in the workflow")
        return
    _after(store, flow_id, reply)


def step_failed(flow_id: str, step_name: str, task_id: str, error: str) -> None:
    _fail(runtime.store(), flow_id, step_name, task_id, error)


def step_revoked(flow_id: str, step_name: str, task_id: str) -> None:
    store = runtime.store()
    _after(store, flow_id, store.revoked(flow_id, step_name, task_id, time.time()))


def settle(flow_id: str, step_name: str, task_id: str, meta: Mapping) -> bool:
    """Apply the transition a task's stored final state calls for (a redelivered message of
    a task that already ended, the repair pass). False when the state is not final."""
    status = meta.get("status")
    if status == "SUCCESS":
        step_succeeded(flow_id, step_name, task_id, meta.get("result"))
    elif status == "FAILURE":
        exc = meta.get("result")
        error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
        step_failed(flow_id, step_name, task_id, error)
    elif status == "REVOKED":
        step_revoked(flow_id, step_name, task_id)
    else:
        return False
    return True


def _fail(store: FlowStore, flow_id: str, step_name: str, task_id: str, error: str) -> None:
    _after(store, flow_id, store.failed(flow_id, step_name, task_id, time.time(), error))


def _after(store: FlowStore, flow_id: str, reply: Claimed) -> list[str]:
    """Publish what a transition claimed; send the notice when it ended the workflow."""
    if reply.claimed:
        publish(store, flow_id, list(reply.claimed))
    if reply.ended:
        send_notice(store, flow_id)
    return reply.names


# --- publishing claimed steps ------------------------------------------------------------
def publish(store: FlowStore, flow_id: str, claimed: list[tuple[str, str]]) -> None:
    """Publish claimed steps (outside any lock), then mark them queued in one round trip.
    A step that cannot be rendered or published fails; its descendants are skipped."""
    names = [name for name, _ in claimed]
    specs = store.steps(flow_id, names, ("spec",))["spec"]
    published = []
    # many at once (a fan-out, the roots): pipelined publishes (celeryapp.submit.batch); a
    # failed flush leaves them "dispatching" for the repair pass, which publishes them again
    with (batch(runtime.app()) if len(claimed) > 1 else nullcontext()) as producer:
        for name, task_id in claimed:
            try:
                spec, used = rendering.parse(specs[name])
                if used:
                    spec = rendering.render(spec, rendering.results(store, flow_id,
                                                                    sorted(used)))
                _send(flow_id, name, task_id, spec, producer)
            except Exception as exc:  # noqa: BLE001 - a render or publish error fails this step only
                log.warning("workflow %s: step %s could not be submitted: %s", flow_id, name,
                            exc)
                _fail(store, flow_id, name, task_id,
                      f"could not be submitted: {type(exc).__name__}: {exc}")
                continue
            published.append((name, task_id))
    store.mark_queued(flow_id, published, time.time())


def _send(flow_id: str, name: str, task_id: str, spec: StepSpec, producer=None) -> None:
    options = {"task_id": task_id, "priority": spec.priority,
               "headers": {FLOW_HEADER: flow_id, STEP_HEADER: name,
                           EXPAND_HEADER: int(bool(spec.expand or spec.on_complete))}}
    if producer is not None:
        options["producer"] = producer
    if spec.queue:
        options["queue"] = spec.queue
    elif spec.host:  # the host's worker that suits the step (the request policy's route)
        options["host"] = spec.host
    if spec.kind == "query":
        kwargs = _present(spec, "params", "engine", "timeout", "retries", "max_inline_rows")
        registered(QUERY_TASK).apply_async((spec.query,), kwargs, **options)
    elif spec.kind == "agent":
        kwargs = _present(spec, "profile", "cwd", "model", "max_turns", "allowed_tools",
                          "permission_mode", "append_system_prompt", "keep_workdir", "timeout",
                          "retries")
        registered(AGENT_TASK).apply_async((spec.agent,), kwargs, **options)
    else:
        options["priority"] = priority_value(spec.priority)
        if "host" in options:
            options["queue"] = route(spec.task, host=options.pop("host"))
        runtime.app().send_task(spec.task, args=spec.args or [], kwargs=spec.kwargs or {},
                                **options)


def _present(spec: StepSpec, *fields: str) -> dict:
    return {field: getattr(spec, field) for field in fields if getattr(spec, field) is not None}


# --- the notice of a workflow that ended ---------------------------------------------------
def send_notice(store: FlowStore, flow_id: str) -> int:
    """Send the workflow's notice if this caller is the one to (flows.lua ``notice``: the
    first, or the repair pass once a sender held it past TURBO_FLOW_DISPATCH_GRACE and
    died): at least once. A failed send leaves it to the repair pass. 1 when sent."""
    if not store.notice(flow_id, time.time(), get_settings().flow_dispatch_grace):
        return 0  # no notice asked for, or another caller sends it
    state = store.load(flow_id)
    sent = 0
    if state and state.get("notify"):
        notify_later("flow", flow_id, state["state"], flow_report(state), state["notify"])
        sent = 1
    store.noticed(flow_id)
    return sent


def flow_report(state: dict) -> dict:
    """A short per-step summary (for notifications and the CLI)."""
    return {
        "name": state["name"],
        "steps": {name: {key: step.get(key) for key in ("state", "worker", "attempts", "error",
                                                         "skipped_because")}
                  for name, step in state["steps"].items()},
    }
