"""The workflow engine: a DAG of query, agent and task steps, each run as soon as its needs are met.

Why not a canvas: Celery chords express series-parallel graphs only; for a DAG
such as A->C, A->D, B->D a canvas makes some step wait for one it does not
depend on. Here every step is an ordinary task carrying ``turbo_flow`` and
``turbo_step`` headers; when one ends, a worker hook (celeryapp.worker.hooks) runs one
command of ``flows.lua`` (:class:`.store.FlowStore`) that records the outcome,
decrements each child's pending-needs counter and claims the children that reached zero
- Celery's Redis chord counter, generalised to any DAG. The claimed children are then published
outside any lock (templates rendered only where a step has them, reading only the
results they name). A failed step skips its descendants; independent branches run on.

Progress survives faults: every transition is idempotent (it checks the step's state
and task id), retried while Redis is unreachable, and a periodic repair pass
(:func:`repair`, a thread in each worker) settles steps whose task ended without its
transition being recorded and publishes again steps claimed but never published.
State lives in per-workflow hashes (:mod:`.layout`) expiring with the results.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, meta
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from ..config import get_settings
from ..core import flowstate
from ..core.names import AGENT_TASK, EXPAND_HEADER, FLOW_HEADER, QUERY_TASK, STEP_HEADER
from ..core.policy import priority_value, route
from ..core.text import as_text
from ..notices import notify_later, summary
from ..submit import batch, registered
from . import layout
from .replies import Claimed, Conflict, StartReply
from .spec import (
    FlowSpecError,
    StepSpec,
    load,
    templated_values,
    validate,
    validate_steps,
)
from .store import FlowStore, info_doc

log = logging.getLogger(__name__)

TERMINAL = set(flowstate.TERMINAL)
SETTLE = 2.0  # seconds a task's final state is left to its own hook before repair acts

__all__ = ["FlowSpecError", "cancel", "dispatch_ready", "get_state", "prepare", "repair",
           "submit", "summary_state", "wait"]


# --- building and submitting --------------------------------------------------------
def prepare(source: str | Path | Mapping, notify: Mapping | None = None,
            flow_id: str | None = None) -> tuple[str, dict]:
    """Validate ``source`` and return (flow id, initial state); nothing is submitted."""
    data = source if isinstance(source, Mapping) else None
    known = _known_tasks(data if data is not None else _peek(source))
    spec = validate(source, known_tasks=known)
    flow_id = flow_id or str(uuid.uuid4())
    notify_spec = dict(notify) if notify else (spec.notify.model_dump(exclude_none=True)
                                               if spec.notify else None)
    state = {
        "id": flow_id, "name": spec.name, "state": "running", "created": time.time(),
        "ended": None, "notify": notify_spec, "defaults": spec.defaults,
        "steps": {name: _new_step(step) for name, step in spec.steps.items()},
    }
    return flow_id, state


def submit(source: str | Path | Mapping, notify: Mapping | None = None) -> str:
    """Validate, store and start a workflow; return its id at once."""
    flow_id, state = prepare(source, notify)
    _store().create(flow_id, state)
    dispatch_ready(flow_id)
    return flow_id


def get_state(flow_id: str) -> dict | None:
    """The whole workflow: {id, name, state, created, ended, notify, defaults, steps}."""
    return _store().load(flow_id)


def summary_state(flow_id: str) -> dict | None:
    """get_state's shape with only the failed and in-flight steps, plus ``total`` and
    ``counts`` (steps per state): cheap whatever the workflow's size."""
    return _store().summary(flow_id)


def wait(flow_id: str, timeout: float = 600, interval: float = 0.1) -> dict:
    """Block until the workflow ends; return its final state."""
    deadline = time.monotonic() + timeout
    store = _store()
    while True:
        found = store.meta(flow_id)
        if found is None:
            raise KeyError(store.missing(flow_id))
        if found["state"] != "running":
            return get_state(flow_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {flow_id} still running after {timeout}s")
        time.sleep(interval)


def cancel(flow_id: str) -> dict:
    """Stop a workflow: every step not yet ended is cancelled (one command); queued steps
    are revoked, running ones stopped at the source."""
    store = _store()
    reply = store.cancel(flow_id, time.time())
    if reply.task_ids:
        # SIGUSR1 raises SoftTimeLimitExceeded in the task: statement cancelled,
        # agent process group killed; queued ones are dropped by every worker.
        _app().control.revoke(list(reply.task_ids), terminate=True, signal="SIGUSR1")
    if reply.applied:
        _send_notice(store, flow_id)
    state = get_state(flow_id)
    if state is None:
        raise KeyError(store.missing(flow_id))
    return state


def dispatch_ready(flow_id: str) -> list[str]:
    """Claim and submit every pending step whose needs all succeeded; return their names.
    (The start of a workflow; O(steps), once.)"""
    store = _store()
    return _after(store, flow_id, store.start(flow_id, time.time()))


# --- transitions (worker hooks, celeryapp.worker.hooks) ----------------------------------
def step_started(flow_id: str, step_name: str, task_id: str, worker: str, attempt: int,
                 tag: str = "", take_over: bool = False) -> StartReply:
    """Record that the message ``tag`` starts this attempt of the step; the reply says
    whether it is to run (:class:`.replies.Start`: a copy of an attempt another message
    started runs only once that message's holder is dead - celeryapp/worker/delivery.py -
    and then again with ``take_over``)."""
    result_key = as_text(_app().backend.get_key_for_task(task_id))
    return _store().started(flow_id, step_name, task_id, time.time(), worker, attempt, tag,
                            take_over, result_key=result_key)


def step_succeeded(flow_id: str, step_name: str, task_id: str, result: Any,
                   expands: bool | None = None) -> None:
    """Record the success, add the steps it asks for (expansion: callbacks, validation and
    rendering run here, outside any lock; the steps are added by the same script that
    records the success), then publish the children that became ready."""
    store = _store()
    added = ""
    if expands is None or expands:
        try:
            added = _expansion(store, flow_id, step_name, result)
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
    _fail(_store(), flow_id, step_name, task_id, error)


def step_revoked(flow_id: str, step_name: str, task_id: str) -> None:
    store = _store()
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


# --- repair ------------------------------------------------------------------------------
def repair(grace: float | None = None, settle_after: float | None = None) -> dict[str, int]:
    """One pass over running workflows' in-flight steps: a step whose task ended gets its
    transition; a step claimed more than ``grace`` s ago (TURBO_FLOW_DISPATCH_GRACE) and
    never published is published again under the same task id; a workflow with nothing in
    flight is started again (a lost start). Safe to run anywhere, any time: every change
    is an idempotent transition. A task that ended less than ``settle_after`` s ago is left
    to its own hook: by default as long as the hook retries a transition
    (TURBO_FLOW_RETRY_SECONDS) plus 2 s, so that a step's ``on_complete`` is not run by
    both. Returns what it did (counts)."""
    settings = get_settings()
    grace = settings.flow_dispatch_grace if grace is None else grace
    if settle_after is None:
        settle_after = SETTLE + settings.flow_retry_seconds
    store = _store()
    backend = _app().backend
    done = {"flows": 0, "settled": 0, "republished": 0, "started": 0, "notices": 0}
    now = time.time()
    for flow_id in store.running():
        try:
            _repair_flow(store, backend, flow_id, grace, settle_after, now, done)
        except Exception as exc:  # noqa: BLE001 - one workflow's trouble does not stop the pass
            log.warning("workflow %s: repair failed: %r", flow_id, exc)
    return done


def _repair_flow(store: FlowStore, backend, flow_id: str, grace: float, settle_after: float,
                 now: float, done: dict[str, int]) -> None:
    found = store.meta(flow_id)
    if found is None:
        store.forget(flow_id)
        return
    if found["state"] != "running":
        if (found["ended"] or 0) < now - SETTLE:
            done["notices"] += _send_notice(store, flow_id)
        return
    done["flows"] += 1
    names = store.inflight(flow_id)
    if not names:
        if (found["created"] or 0) < now - grace:
            done["started"] += len(dispatch_ready(flow_id))
        return
    records = store.steps(flow_id, names, ("state", "info"))
    steps = [(name, as_text(records["state"].get(name)), info_doc(records["info"].get(name)))
             for name in names]
    steps = [(n, s, i) for n, s, i in steps if i.get("task_id")]
    pipe = backend.client.pipeline(transaction=False)
    for _, _, info in steps:
        pipe.get(backend.get_key_for_task(info["task_id"]))
    for (name, state, info), raw in zip(steps, pipe.execute(), strict=True):
        task_meta = backend.decode_result(raw) if raw else None
        if task_meta and task_meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
            if _age(task_meta.get("date_done"), now) >= settle_after:
                settle(flow_id, name, info["task_id"], task_meta)
                done["settled"] += 1
        elif state == "dispatching" and task_meta is None \
                and (info.get("claimed") or 0) < now - grace:
            log.warning("workflow %s: step %s was claimed %.0fs ago and never published: "
                        "publishing it again", flow_id, name, now - info["claimed"])
            _publish(store, flow_id, [(name, info["task_id"])])
            done["republished"] += 1


def _age(date_done, now: float) -> float:
    if date_done is None:
        return float("inf")
    if isinstance(date_done, datetime):
        when = date_done
    else:
        try:
            when = datetime.fromisoformat(str(date_done))
        except ValueError:
            return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return now - when.timestamp()


# --- internals --------------------------------------------------------------------------
def _fail(store: FlowStore, flow_id: str, step_name: str, task_id: str, error: str) -> None:
    _after(store, flow_id, store.failed(flow_id, step_name, task_id, time.time(), error))


def _after(store: FlowStore, flow_id: str, reply: Claimed) -> list[str]:
    """Publish what a transition claimed; send the notice when it ended the workflow."""
    if reply.claimed:
        _publish(store, flow_id, list(reply.claimed))
    if reply.ended:
        _send_notice(store, flow_id)
    return reply.names


def _send_notice(store: FlowStore, flow_id: str) -> int:
    """Send the workflow's notice if this caller is the one to (flows.lua ``notice``: the
    first, or the repair pass once a sender held it past TURBO_FLOW_DISPATCH_GRACE and
    died): at least once. A failed send leaves it to the repair pass."""
    grace = get_settings().flow_dispatch_grace
    if not store.notice(flow_id, time.time(), grace):
        return 0  # no notice asked for, or another caller sends it
    state = get_state(flow_id)
    sent = 0
    if state and state.get("notify"):
        notify_later("flow", flow_id, state["state"], flow_report(state), state["notify"])
        sent = 1
    store.noticed(flow_id)
    return sent


def _new_step(step: StepSpec) -> dict:
    return {"kind": step.kind, "needs": list(step.needs), "state": "pending",
            "task_id": None, "worker": None, "started": None, "ended": None, "attempts": 0,
            "result": None, "error": None, "skipped_because": None,
            "spec": step.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}


@lru_cache(maxsize=4096)
def _parse(raw: bytes | str) -> tuple[StepSpec, frozenset[str]]:
    """A step's stored static record: its spec, and the step names its templates use.
    Cached: the steps of a fan-out usually share one record text but for their order."""
    doc = json.loads(raw)
    spec = StepSpec.model_validate(doc["spec"])
    env = Environment()
    used: set[str] = set()
    for _, text in templated_values(spec):
        used |= meta.find_undeclared_variables(env.parse(text))
    return spec, frozenset(used)


def _publish(store: FlowStore, flow_id: str, claimed: list[tuple[str, str]]) -> None:
    """Publish claimed steps (outside any lock), then mark them queued in one round trip.
    A step that cannot be rendered or published fails; its descendants are skipped."""
    names = [name for name, _ in claimed]
    specs = store.steps(flow_id, names, ("spec",))["spec"]
    published = []
    # many at once (a fan-out, the roots): pipelined publishes (celeryapp.submit.batch); a
    # failed flush leaves them "dispatching" for the repair pass, which publishes them again
    with (batch(_app()) if len(claimed) > 1 else nullcontext()) as producer:
        for name, task_id in claimed:
            try:
                spec, used = _parse(specs[name])
                if used:
                    spec = _render(spec, _results(store, flow_id, sorted(used)))
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
        _app().send_task(spec.task, args=spec.args or [], kwargs=spec.kwargs or {},
                        **options)


def _present(spec: StepSpec, *fields: str) -> dict:
    return {field: getattr(spec, field) for field in fields if getattr(spec, field) is not None}


def _results(store: FlowStore, flow_id: str, names: list[str]) -> dict[str, Any]:
    """Full results of the steps a template names (validation made them ancestors)."""
    infos = store.steps(flow_id, names, ("info",))["info"]
    backend = _app().backend
    results = {}
    for name in names:
        task_id = info_doc(infos.get(name)).get("task_id")
        if task_id:
            results[name] = backend.get_task_meta(task_id).get("result")
    return results


def _render(spec: StepSpec, context: Mapping[str, Any]) -> StepSpec:
    text_env = SandboxedEnvironment(undefined=StrictUndefined)
    native_env = NativeEnvironment(undefined=StrictUndefined)

    def render(value: Any, native: bool) -> Any:
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            env = native_env if native else text_env
            return env.from_string(value).render(**context)
        if isinstance(value, dict):
            return {key: render(item, native) for key, item in value.items()}
        if isinstance(value, list):
            return [render(item, native) for item in value]
        return value

    update = {}
    for field, native in (("query", False), ("agent", False), ("cwd", False),
                          ("append_system_prompt", False), ("params", True), ("args", True),
                          ("kwargs", True)):
        value = getattr(spec, field)
        if value is not None:
            update[field] = render(value, native)
    return spec.model_copy(update=update)


def _expansion(store: FlowStore, flow_id: str, name: str, result: Any) -> str:
    """The steps a completed step asks for (agent JSON output or on_complete), validated
    against a snapshot of the workflow; '' when none. No lock: the script that records the
    success adds them atomically (and refuses names that appeared meanwhile)."""
    raw = store.steps(flow_id, [name], ("spec",))["spec"].get(name)
    if raw is None:
        return ""
    spec, _ = _parse(raw)
    if not spec.expand and not spec.on_complete:
        return ""
    new_steps: dict[str, Any] = {}
    if spec.expand and isinstance(result, dict):
        new_steps.update(_steps_from_agent_output(result.get("result")))
    snapshot = None
    if spec.on_complete:
        module_name, func_name = spec.on_complete.split(":")
        callback = getattr(importlib.import_module(module_name), func_name)
        snapshot = get_state(flow_id)
        returned = callback(result=result, step=name, flow=snapshot) or {}
        if not isinstance(returned, Mapping):
            raise FlowSpecError([f"on_complete {spec.on_complete} returned "
                                 f"{type(returned).__name__}, not a mapping of steps"])
        new_steps.update(returned)
    if not new_steps:
        return ""
    snapshot = snapshot or get_state(flow_id)
    existing = {step_name: StepSpec.model_validate(item["spec"])
                for step_name, item in snapshot["steps"].items()}
    added = validate_steps(new_steps, existing=existing, defaults=snapshot.get("defaults"),
                           known_tasks=_known_tasks({"steps": new_steps}))
    rows = []
    for offset, (step_name, added_step) in enumerate(added.items()):
        entry = _new_step(added_step)
        entry["added_by"] = name
        rows.append([step_name, layout.static_json(len(existing) + offset, entry),
                     list(added_step.needs)])
    log.info("workflow %s: step %s adds %s", flow_id, name, ", ".join(added))
    return json.dumps(rows)


def _steps_from_agent_output(text: Any) -> dict:
    """An agent answers ``{"steps": {...}}`` (the JSON may sit in a ```json fence)."""
    if not isinstance(text, str):
        return {}
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[body.find("\n") + 1:] if "\n" in body else body
    try:
        data = json.loads(body)
    except ValueError:
        raise FlowSpecError(["the agent's output is not the JSON object {\"steps\": {...}} "
                             "that expand: true asks for"]) from None
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, dict):
        raise FlowSpecError(["the agent's JSON output has no 'steps' mapping"])
    return steps


def flow_report(state: dict) -> dict:
    """A short per-step summary (for notifications and the CLI)."""
    return {
        "name": state["name"],
        "steps": {name: {key: step.get(key) for key in ("state", "worker", "attempts", "error",
                                                         "skipped_because")}
                  for name, step in state["steps"].items()},
    }


def _known_tasks(data: Mapping | None) -> set[str] | None:
    """Registered task names, only when the spec has ``task:`` steps (it costs a Celery import)."""
    steps = (data or {}).get("steps") or {}
    if not any(isinstance(body, Mapping) and "task" in body for body in steps.values()):
        return None
    _app().loader.import_default_modules()
    return set(_app().tasks)


def _peek(source) -> Mapping | None:
    try:
        return load(source)
    except FlowSpecError:
        return None


def _app():
    """The Celery app, built from the environment on first use (``turbo submit flow``
    validates without paying for Celery)."""
    from ..factory import app

    return app


def _store() -> FlowStore:
    settings = get_settings()
    return FlowStore(_app().backend.client, settings.result_expires, settings.flow_retry_seconds)
