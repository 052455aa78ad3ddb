"""Workflow specs: parse (YAML, JSON or a dict), validate, and name every problem.

Nothing is submitted until the whole spec is valid: unknown ``needs``, cycles
(listed), unknown or misplaced fields and references to steps that are not
ancestors are all reported together, each with the step that has it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml  # YAML is a superset of JSON
from jinja2 import Environment, TemplateSyntaxError, meta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from celeryapp.core.agent_options import DEFAULT_PROFILE, check_options
from celeryapp.core.errors import InvalidRequest
from celeryapp.core.names import PRIORITIES
from celeryapp.core.policy import check_queue_name

STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CALLBACK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
KINDS = ("query", "agent", "task")
KIND_FIELDS = {
    "query": {"engine", "params", "max_inline_rows"},
    "agent": {"profile", "cwd", "model", "max_turns", "allowed_tools", "permission_mode",
              "append_system_prompt", "keep_workdir", "expand"},
    "task": {"args", "kwargs"},
}
AGENT_OPTIONS = ("model", "max_turns", "allowed_tools", "permission_mode",
                 "append_system_prompt", "keep_workdir")
COMMON_DEFAULTS = {"retries", "timeout", "priority", "queue", "host"}
Priority = Literal["critical", "high", "normal", "low"]


class FlowSpecError(ValueError):
    """The workflow spec is invalid; the message lists every problem found."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid workflow spec:\n  - " + "\n  - ".join(self.problems))


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    agent: str | None = None
    task: str | None = None
    needs: list[str] = Field(default_factory=list)
    retries: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    priority: Priority | None = None
    queue: str | None = None
    host: str | None = None
    on_complete: str | None = None
    # query
    engine: str | None = None
    params: list | dict | None = None
    max_inline_rows: int | None = Field(default=None, ge=0)
    # agent
    profile: str | None = None
    cwd: str | None = None
    model: str | None = None
    max_turns: int | None = Field(default=None, gt=0)
    allowed_tools: list[str] | None = None
    permission_mode: str | None = None
    append_system_prompt: str | None = None
    keep_workdir: bool | None = None
    expand: bool = False
    # task
    args: list | None = None
    kwargs: dict | None = None

    @field_validator("needs", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("on_complete")
    @classmethod
    def _callback_form(cls, value):
        if value is not None and not CALLBACK.match(value):
            raise ValueError(f"on_complete must look like 'package.module:function', got {value!r}")
        return value

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)


class NotifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: str | None = None
    dir: str | None = None

    @field_validator("webhook")
    @classmethod
    def _http(cls, value):
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook must be an http(s) URL, got {value!r}")
        return value


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepSpec] = Field(min_length=1)
    notify: NotifySpec | None = None


class _RawFlow(FlowSpec):
    """The top level first, so each step's problems can be reported on their own."""
    steps: dict[str, dict] = Field(min_length=1)


def load(source: str | Path | Mapping) -> dict:
    """A spec as a dict, from a dict, a YAML/JSON file path, or YAML/JSON text."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source) if not isinstance(source, str) or "\n" not in source else None
    if path is not None and path.exists():
        text, where = path.read_text(), str(path)
    elif isinstance(source, str) and "\n" in source:
        text, where = source, "<text>"
    else:
        raise FlowSpecError([f"workflow file {str(source)!r} does not exist"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlowSpecError([f"{where}: not valid YAML/JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise FlowSpecError([f"{where}: a workflow is a mapping with 'name' and 'steps'"])
    return data


def validate(source: str | Path | Mapping, *, known_tasks: Iterable[str] | None = None,
             existing: Mapping[str, StepSpec] | None = None) -> FlowSpec:
    """Parse and check a whole spec; raise FlowSpecError naming every problem."""
    data = load(source)
    try:
        raw = _RawFlow.model_validate(data)
    except ValidationError as exc:
        raise FlowSpecError(_pydantic_problems(exc)) from None
    problems = _check_defaults(raw.defaults)
    steps: dict[str, StepSpec] = {}
    for name, body in raw.steps.items():
        try:
            steps[name] = StepSpec.model_validate(body)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, prefix=f"step {name!r}")
    # steps that failed to parse still count as names, so their dependents are
    # not also reported as needing an unknown step
    placeholders = {name: StepSpec() for name in raw.steps if name not in steps}
    steps = apply_defaults(steps, raw.defaults)
    problems += check_steps(steps, known_tasks=known_tasks,
                            existing={**(existing or {}), **placeholders})
    if problems:
        raise FlowSpecError(problems)
    return FlowSpec(name=raw.name, defaults=raw.defaults, steps=steps, notify=raw.notify)


def validate_steps(steps: Mapping[str, Any], *, existing: Mapping[str, StepSpec],
                   defaults: Mapping[str, Any] | None = None,
                   known_tasks: Iterable[str] | None = None) -> dict[str, StepSpec]:
    """Check steps added to a running workflow (reactive expansion)."""
    try:
        parsed = {name: StepSpec.model_validate(body) for name, body in dict(steps).items()}
    except ValidationError as exc:
        raise FlowSpecError(_pydantic_problems(exc, prefix="added step")) from None
    parsed = apply_defaults(parsed, defaults or {})
    problems = [f"added step {name!r} already exists in the workflow"
                for name in parsed if name in existing]
    problems += check_steps(parsed, known_tasks=known_tasks, existing=existing)
    if problems:
        raise FlowSpecError(problems)
    return parsed


def apply_defaults(steps: Mapping[str, StepSpec],
                   defaults: Mapping[str, Any]) -> dict[str, StepSpec]:
    out = {}
    for name, step in steps.items():
        allowed = COMMON_DEFAULTS | KIND_FIELDS[step.kind] if _one_kind(step) else COMMON_DEFAULTS
        fill = {key: value for key, value in defaults.items()
                if key in allowed and getattr(step, key, None) is None}
        out[name] = step.model_copy(update=fill) if fill else step
    return out


def check_steps(steps: Mapping[str, StepSpec], *, known_tasks: Iterable[str] | None,
                existing: Mapping[str, StepSpec] | None = None) -> list[str]:
    existing = dict(existing or {})
    everything = {**existing, **steps}
    problems: list[str] = []
    tasks = set(known_tasks) if known_tasks is not None else None
    for name, step in steps.items():
        where = f"step {name!r}"
        if not STEP_NAME.match(name):
            problems.append(f"{where}: a step name is letters, digits and _ (it is used in "
                            f"{{{{ name.field }}}} references)")
        kinds = [kind for kind in KINDS if getattr(step, kind) is not None]
        if len(kinds) != 1:
            problems.append(f"{where}: needs exactly one of query, agent or task"
                            + (f" (has {', '.join(kinds)})" if kinds else ""))
            continue
        kind = kinds[0]
        for other, fields in KIND_FIELDS.items():
            for field in sorted(fields - KIND_FIELDS[kind]):
                if field in step.model_fields_set and other != kind:
                    problems.append(f"{where}: field {field!r} applies to {other} steps only")
        if step.queue and step.host:
            problems.append(f"{where}: give queue or host, not both")
        for value in (step.queue, step.host):
            if value is not None:
                try:
                    check_queue_name(value)
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
        if kind == "agent":
            problems += _agent_problems(where, step)
        if kind == "task" and tasks is not None and step.task not in tasks:
            problems.append(f"{where}: unknown task {step.task!r}")
        for need in step.needs:
            if need not in everything:
                problems.append(f"{where}: needs unknown step {need!r}")
            if need == name:
                problems.append(f"{where}: needs itself")
    cycle = find_cycle(everything)
    if cycle:
        problems.append("cycle: " + " -> ".join(cycle))
    elif not problems:
        problems += _check_references(steps, everything)
    return problems


def _agent_problems(where: str, step: StepSpec) -> list[str]:
    """The checks delay() applies to an agent run, at submit (templated values later)."""
    options = {field: getattr(step, field) for field in AGENT_OPTIONS}
    options = {field: value for field, value in options.items()
               if not (isinstance(value, str) and ("{{" in value or "{%" in value))}
    try:
        check_options(step.profile or DEFAULT_PROFILE, options)
    except InvalidRequest as exc:
        return [f"{where}: {exc}"]
    return []


def find_cycle(steps: Mapping[str, StepSpec]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS (deep DAGs are fine)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {name: WHITE for name in steps}
    for root in steps:
        if color[root] != WHITE:
            continue
        stack = [(root, iter(steps[root].needs))]
        path = [root]
        color[root] = GREY
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c in steps), None)
            if child is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
            elif color[child] == GREY:
                start = path.index(child)
                return list(reversed(path[start:] + [child]))
            elif color[child] == WHITE:
                color[child] = GREY
                stack.append((child, iter(steps[child].needs)))
                path.append(child)
    return None


def ancestors(steps: Mapping[str, StepSpec], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(steps[name].needs)
    while todo:
        need = todo.pop()
        if need not in seen and need in steps:
            seen.add(need)
            todo.extend(steps[need].needs)
    return seen


def descendants(steps: Mapping[str, StepSpec], name: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for step_name, step in steps.items():
        for need in step.needs:
            children.setdefault(need, []).append(step_name)
    seen: set[str] = set()
    todo = list(children.get(name, ()))
    while todo:
        child = todo.pop()
        if child not in seen:
            seen.add(child)
            todo.extend(children.get(child, ()))
    return seen


def templated_values(step: StepSpec) -> list[tuple[str, str]]:
    """(field, template text) for every string a step renders at dispatch."""
    found: list[tuple[str, str]] = []

    def walk(label: str, value: Any) -> None:
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                found.append((label, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{label}.{key}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{label}[{index}]", item)

    for field in ("query", "agent", "params", "args", "kwargs", "cwd", "append_system_prompt"):
        walk(field, getattr(step, field))
    return found


def _check_references(steps: Mapping[str, StepSpec],
                      everything: Mapping[str, StepSpec]) -> list[str]:
    env = Environment()
    problems = []
    for name, step in steps.items():
        allowed = ancestors(everything, name)
        for field, text in templated_values(step):
            try:
                used = meta.find_undeclared_variables(env.parse(text))
            except TemplateSyntaxError as exc:
                problems.append(f"step {name!r}: {field}: template error: {exc.message}")
                continue
            for ref in sorted(used - allowed):
                hint = f"needs: {', '.join(step.needs)}" if step.needs else "it needs no step"
                problems.append(f"step {name!r}: {field} refers to {ref!r}, which is not a step "
                                f"it depends on ({hint})")
    return problems


def _check_defaults(defaults: Mapping[str, Any]) -> list[str]:
    allowed = COMMON_DEFAULTS | set().union(*KIND_FIELDS.values())
    problems = [f"defaults: unknown field {key!r}" for key in defaults if key not in allowed]
    priority = defaults.get("priority")
    if priority is not None and priority not in PRIORITIES:
        problems.append(f"defaults: unknown priority {priority!r}; use one of "
                        f"{', '.join(PRIORITIES)}")
    return problems


def _one_kind(step: StepSpec) -> bool:
    return sum(getattr(step, kind) is not None for kind in KINDS) == 1


def _pydantic_problems(exc: ValidationError, prefix: str = "step") -> list[str]:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        if prefix == "step" and len(loc) >= 2 and loc[0] == "steps":
            where, rest = f"step {loc[1]!r}", loc[2:]
        elif prefix == "added step" and loc:
            where, rest = f"{prefix} {loc[0]!r}", loc[1:]
        elif prefix.startswith("step "):
            where, rest = prefix, loc
        else:
            where, rest = "workflow", loc
        field = ".".join(str(part) for part in rest)
        kind = error["type"]
        if kind == "extra_forbidden":
            problems.append(f"{where}: unknown field {field!r}")
        elif kind == "missing":
            problems.append(f"{where}: missing field {field!r}")
        else:
            problems.append(f"{where}: {field + ': ' if field else ''}{error['msg']}")
    return problems


def dumps(spec: FlowSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", exclude_none=True))
