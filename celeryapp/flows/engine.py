"""The workflow engine: a DAG of query, agent and task steps, each run as soon as its needs are met.

Why not a canvas: Celery chords express series-parallel graphs only; for a DAG
such as A->C, A->D, B->D a canvas makes some step wait for one it does not
depend on. Here every step is an ordinary task carrying ``turbo_flow`` and
``turbo_step`` headers; when one ends, a worker hook (celeryapp.worker.hooks) updates the
workflow's state in Redis under a per-workflow lock and submits each child whose
needs have all succeeded - the fan-in counter that Celery's Redis chords keep,
generalised to any DAG. A failed step skips its descendants; independent
branches run on. State is one JSON document per workflow in the result backend,
expiring with the results.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from jinja2 import StrictUndefined
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from ..config import get_settings
from ..core.names import AGENT_TASK, FLOW_HEADER, QUERY_TASK, STEP_HEADER
from ..core.policy import priority_value, route
from ..notices import notify_later, summary
from ..submit import registered
from .spec import (
    FlowSpecError,
    StepSpec,
    descendants,
    load,
    templated_values,
    validate,
    validate_steps,
)
from .store import FlowStore

log = logging.getLogger(__name__)

TERMINAL = {"succeeded", "failed", "skipped", "cancelled"}

__all__ = ["FlowSpecError", "cancel", "dispatch_ready", "get_state", "prepare", "submit", "wait"]


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
    store = _store()
    store.create(state)
    dispatch_ready(flow_id)
    return flow_id


def get_state(flow_id: str) -> dict | None:
    return _store().load(flow_id)


def wait(flow_id: str, timeout: float = 600, interval: float = 0.1) -> dict:
    """Block until the workflow ends; return its final state."""
    deadline = time.monotonic() + timeout
    while True:
        state = get_state(flow_id)
        if state is None:
            raise KeyError(f"no workflow {flow_id!r} (expired or never submitted)")
        if state["state"] != "running":
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {flow_id} still running after {timeout}s")
        time.sleep(interval)


def cancel(flow_id: str) -> dict:
    """Stop a workflow: revoke queued steps, stop running ones at the source."""
    with _store().locked(flow_id) as state:
        running = []
        for name, step in state["steps"].items():
            if step["state"] in ("queued", "running"):
                running.append(step["task_id"])
            if step["state"] not in TERMINAL:
                step.update(state="cancelled", ended=time.time())
        _finish_if_done(state, force="cancelled")
    if running:
        # SIGUSR1 raises SoftTimeLimitExceeded in the task: statement cancelled,
        # agent process group killed; queued ones are dropped by every worker.
        _app().control.revoke(running, terminate=True, signal="SIGUSR1")
    return state


def dispatch_ready(flow_id: str) -> list[str]:
    """Submit every pending step whose needs all succeeded; return their names."""
    with _store().locked(flow_id) as state:
        return _dispatch(state)


# --- worker hooks (celeryapp.worker.hooks) -----------------------------------------------------
def step_started(flow_id: str, step_name: str, task_id: str, worker: str, attempt: int) -> None:
    with _store().locked(flow_id) as state:
        step = state["steps"].get(step_name)
        if step is None or step["task_id"] != task_id or step["state"] in TERMINAL:
            return
        step.update(state="running", worker=worker, attempts=attempt)
        step["started"] = step["started"] or time.time()


def step_succeeded(flow_id: str, step_name: str, task_id: str, result: Any) -> None:
    added_error = None
    with _store().locked(flow_id) as state:
        step = state["steps"].get(step_name)
        if step is None or step["task_id"] != task_id or step["state"] in TERMINAL:
            return
        step.update(state="succeeded", ended=time.time(), result=summary(result))
        try:
            _expand(state, step_name, step, result)
        except FlowSpecError as exc:
            added_error = str(exc)
            step.update(state="failed", error=f"its follow-up steps are invalid: {exc}")
            _skip_descendants(state, step_name)
        if added_error is None:
            _dispatch(state)
        _finish_if_done(state)


def step_failed(flow_id: str, step_name: str, task_id: str, error: str) -> None:
    with _store().locked(flow_id) as state:
        step = state["steps"].get(step_name)
        if step is None or step["task_id"] != task_id or step["state"] in TERMINAL:
            return
        step.update(state="failed", ended=time.time(), error=error)
        _skip_descendants(state, step_name)
        _finish_if_done(state)


def step_revoked(flow_id: str, step_name: str, task_id: str) -> None:
    with _store().locked(flow_id) as state:
        step = state["steps"].get(step_name)
        if step is None or step["task_id"] != task_id or step["state"] in TERMINAL:
            return
        step.update(state="cancelled", ended=time.time())
        _skip_descendants(state, step_name, reason="cancelled")
        _finish_if_done(state)


# --- internals --------------------------------------------------------------------------
def _new_step(step: StepSpec) -> dict:
    return {"kind": step.kind, "needs": list(step.needs), "state": "pending",
            "task_id": None, "worker": None, "started": None, "ended": None, "attempts": 0,
            "result": None, "error": None, "skipped_because": None,
            "spec": step.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}


def _spec_of(step: dict) -> StepSpec:
    return StepSpec.model_validate(step["spec"])


def _dispatch(state: dict) -> list[str]:
    if state["state"] != "running":
        return []
    steps = state["steps"]
    ready = [name for name, step in steps.items() if step["state"] == "pending"
             and all(steps[need]["state"] == "succeeded" for need in step["needs"])]
    for name in ready:
        step = steps[name]
        step["task_id"] = str(uuid.uuid4())
        try:
            _publish(state, name, step)
        except Exception as exc:  # a render or publish error fails this step only
            log.warning("workflow %s: step %s could not be submitted: %s", state["id"], name, exc)
            step.update(state="failed", ended=time.time(),
                        error=f"could not be submitted: {type(exc).__name__}: {exc}")
            _skip_descendants(state, name)
            continue
        step["state"] = "queued"
        step["queued"] = time.time()
    _finish_if_done(state)
    return ready


def _publish(state: dict, name: str, step: dict) -> None:
    spec = _spec_of(step)
    context = _parent_results(state, name)
    rendered = _render(spec, context)
    options = {"task_id": step["task_id"], "priority": spec.priority,
               "headers": {FLOW_HEADER: state["id"], STEP_HEADER: name}}
    if spec.queue:
        options["queue"] = spec.queue
    elif spec.host:  # the host's worker that suits the step (the request policy's route)
        options["host"] = spec.host
    if spec.kind == "query":
        kwargs = _present(rendered, "params", "engine", "timeout", "retries", "max_inline_rows")
        registered(QUERY_TASK).apply_async((rendered.query,), kwargs, **options)
    elif spec.kind == "agent":
        kwargs = _present(rendered, "profile", "cwd", "model", "max_turns", "allowed_tools",
                          "permission_mode", "append_system_prompt", "keep_workdir", "timeout",
                          "retries")
        registered(AGENT_TASK).apply_async((rendered.agent,), kwargs, **options)
    else:
        options["priority"] = priority_value(spec.priority)
        if "host" in options:
            options["queue"] = route(spec.task, host=options.pop("host"))
        _app().send_task(spec.task, args=rendered.args or [], kwargs=rendered.kwargs or {},
                        **options)


def _present(spec: StepSpec, *fields: str) -> dict:
    return {field: getattr(spec, field) for field in fields if getattr(spec, field) is not None}


def _parent_results(state: dict, name: str) -> dict[str, Any]:
    """Full results of every succeeded ancestor, for ``{{ step.field }}``."""
    steps = state["steps"]
    wanted: set[str] = set()
    todo = list(steps[name]["needs"])
    while todo:
        need = todo.pop()
        if need not in wanted:
            wanted.add(need)
            todo.extend(steps[need]["needs"])
    results = {}
    for need in wanted:
        task_id = steps[need]["task_id"]
        meta = _app().backend.get_task_meta(task_id)
        results[need] = meta.get("result")
    return results


def _render(spec: StepSpec, context: Mapping[str, Any]) -> StepSpec:
    if not templated_values(spec):
        return spec
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


def _expand(state: dict, name: str, step: dict, result: Any) -> None:
    """Add the steps a completed step asks for (agent JSON output or on_complete)."""
    spec = _spec_of(step)
    new_steps: dict[str, Any] = {}
    if spec.expand and isinstance(result, dict):
        new_steps.update(_steps_from_agent_output(result.get("result")))
    if spec.on_complete:
        module_name, func_name = spec.on_complete.split(":")
        callback = getattr(importlib.import_module(module_name), func_name)
        returned = callback(result=result, step=name, flow=state) or {}
        if not isinstance(returned, Mapping):
            raise FlowSpecError([f"on_complete {spec.on_complete} returned "
                                 f"{type(returned).__name__}, not a mapping of steps"])
        new_steps.update(returned)
    if not new_steps:
        return
    existing = {step_name: _spec_of(item) for step_name, item in state["steps"].items()}
    added = validate_steps(new_steps, existing=existing, defaults=state.get("defaults"),
                           known_tasks=_known_tasks({"steps": new_steps}))
    for step_name, added_step in added.items():
        entry = _new_step(added_step)
        entry["added_by"] = name
        state["steps"][step_name] = entry
    log.info("workflow %s: step %s added %s", state["id"], name, ", ".join(added))


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


def _skip_descendants(state: dict, name: str, reason: str = "failed") -> None:
    specs = {step_name: _spec_of(step) for step_name, step in state["steps"].items()}
    for child in descendants(specs, name):
        entry = state["steps"][child]
        if entry["state"] == "pending":
            entry.update(state="skipped", ended=time.time(),
                         skipped_because=name, error=f"step {name!r} {reason}")


def _finish_if_done(state: dict, force: str | None = None) -> None:
    if state["state"] != "running":
        return
    steps = state["steps"].values()
    if force is None and not all(step["state"] in TERMINAL for step in steps):
        return
    if force:
        state["state"] = force
    elif all(step["state"] == "succeeded" for step in steps):
        state["state"] = "succeeded"
    else:
        state["state"] = "failed"
    state["ended"] = time.time()
    if state.get("notify"):
        notify_later("flow", state["id"], state["state"], flow_report(state), state["notify"])


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
    return FlowStore(_app().backend.client, get_settings().result_expires)
