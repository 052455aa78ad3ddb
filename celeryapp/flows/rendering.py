"""A step's templates and the steps a completed step adds, both outside any lock.

**Rendering.** A step's strings may use the results of the steps it needs through Jinja2
(``{{ a.rows }}``): when the step is published its stored record is parsed once (the names
its templates use, cached), and only a step that has templates reads the results it names.
**Expansion.** An agent step with ``expand: true`` answers ``{"steps": {...}}``; an
``on_complete`` callback returns steps. They are validated against a snapshot of the
workflow here; the script that records the step's success adds them atomically (and
refuses names that appeared meanwhile).
"""
from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import Environment, StrictUndefined, meta
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from . import layout, runtime
from .spec import FlowSpecError, StepSpec, templated_values, validate_steps
from .store import FlowStore, info_doc

log = logging.getLogger(__name__)

TEMPLATED = (("query", False), ("agent", False), ("cwd", False), ("append_system_prompt", False),
             ("params", True), ("args", True), ("kwargs", True))  # field, rendered natively


def new_step(step: StepSpec) -> dict:
    """A step's record before it runs (get_state's shape)."""
    return {"kind": step.kind, "needs": list(step.needs), "state": "pending",
            "task_id": None, "worker": None, "started": None, "ended": None, "attempts": 0,
            "result": None, "error": None, "skipped_because": None,
            "spec": step.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}


@lru_cache(maxsize=4096)
def parse(raw: bytes | str) -> tuple[StepSpec, frozenset[str]]:
    """A step's stored static record: its spec, and the step names its templates use.
    Cached: the steps of a fan-out usually share one record text but for their order."""
    doc = json.loads(raw)
    spec = StepSpec.model_validate(doc["spec"])
    env = Environment()
    used: set[str] = set()
    for _, text in templated_values(spec):
        used |= meta.find_undeclared_variables(env.parse(text))
    return spec, frozenset(used)


def results(store: FlowStore, flow_id: str, names: list[str]) -> dict[str, Any]:
    """Full results of the steps a template names (validation made them ancestors)."""
    infos = store.steps(flow_id, names, ("info",))["info"]
    backend = runtime.app().backend
    found = {}
    for name in names:
        task_id = info_doc(infos.get(name)).get("task_id")
        if task_id:
            found[name] = backend.get_task_meta(task_id).get("result")
    return found


def render(spec: StepSpec, context: Mapping[str, Any]) -> StepSpec:
    """``spec`` with its templates rendered: text in strings, native values (lists,
    numbers) in params, args and kwargs."""
    text_env = SandboxedEnvironment(undefined=StrictUndefined)
    native_env = NativeEnvironment(undefined=StrictUndefined)

    def render_value(value: Any, native: bool) -> Any:
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            env = native_env if native else text_env
            return env.from_string(value).render(**context)
        if isinstance(value, dict):
            return {key: render_value(item, native) for key, item in value.items()}
        if isinstance(value, list):
            return [render_value(item, native) for item in value]
        return value

    update = {}
    for field, native in TEMPLATED:
        value = getattr(spec, field)
        if value is not None:
            update[field] = render_value(value, native)
    return spec.model_copy(update=update)


def expansion(store: FlowStore, flow_id: str, name: str, result: Any) -> str:
    """The steps a completed step asks for (agent JSON output or on_complete), validated
    against a snapshot of the workflow, as flows.lua's ``succeeded`` takes them; '' when
    none."""
    raw = store.steps(flow_id, [name], ("spec",))["spec"].get(name)
    if raw is None:
        return ""
    spec, _ = parse(raw)
    if not spec.expand and not spec.on_complete:
        return ""
    new_steps: dict[str, Any] = {}
    if spec.expand and isinstance(result, dict):
        new_steps.update(steps_from_agent_output(result.get("result")))
    snapshot = None
    if spec.on_complete:
        callback = _callback(spec.on_complete)
        snapshot = store.load(flow_id)
        returned = callback(result=result, step=name, flow=snapshot) or {}
        if not isinstance(returned, Mapping):
            raise FlowSpecError([f"on_complete {spec.on_complete} returned "
                                 f"{type(returned).__name__}, not a mapping of steps"])
        new_steps.update(returned)
    if not new_steps:
        return ""
    snapshot = snapshot or store.load(flow_id)
    existing = {step_name: StepSpec.model_validate(item["spec"])
                for step_name, item in snapshot["steps"].items()}
    added = validate_steps(new_steps, existing=existing, defaults=snapshot.get("defaults"),
                           known_tasks=runtime.known_tasks({"steps": new_steps}))
    rows = _rows(added, len(existing), name)
    log.info("workflow %s: step %s adds %s", flow_id, name, ", ".join(added))
    return json.dumps(rows)


def _callback(target: str):
    """The function an ``on_complete: "module:function"`` names."""
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _rows(added: dict[str, StepSpec], first_index: int, added_by: str) -> list:
    """Added steps as flows.lua's ``succeeded`` takes them: [name, static JSON, needs]."""
    rows = []
    for offset, (step_name, added_step) in enumerate(added.items()):
        entry = new_step(added_step)
        entry["added_by"] = added_by
        rows.append([step_name, layout.static_json(first_index + offset, entry),
                     list(added_step.needs)])
    return rows


def steps_from_agent_output(text: Any) -> dict:
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
