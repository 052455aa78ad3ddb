"""Workflows from any process: build, submit, read, wait for, cancel (``celeryapp.flows``).

Why not a canvas: Celery chords express series-parallel graphs only; for a DAG such as
A->C, A->D, B->D a canvas makes some step wait for one it does not depend on. Here every
step is an ordinary task, run as soon as its needs are met (:mod:`.transitions`); progress
survives faults (:mod:`.repair_pass`). State lives in per-workflow hashes (:mod:`.layout`)
expiring with the results.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from ..core import flowstate
from . import runtime, transitions
from .rendering import new_step
from .spec import FlowSpecError, load, validate

TERMINAL = set(flowstate.TERMINAL)


def prepare(source: str | Path | Mapping, notify: Mapping | None = None,
            flow_id: str | None = None) -> tuple[str, dict]:
    """Validate ``source`` and return (flow id, initial state); nothing is submitted."""
    data = source if isinstance(source, Mapping) else None
    known = runtime.known_tasks(data if data is not None else _peek(source))
    spec = validate(source, known_tasks=known)
    flow_id = flow_id or str(uuid.uuid4())
    notify_spec = dict(notify) if notify else (spec.notify.model_dump(exclude_none=True)
                                               if spec.notify else None)
    state = {
        "id": flow_id, "name": spec.name, "state": "running", "created": time.time(),
        "ended": None, "notify": notify_spec, "defaults": spec.defaults,
        "steps": {name: new_step(step) for name, step in spec.steps.items()},
    }
    return flow_id, state


def submit(source: str | Path | Mapping, notify: Mapping | None = None) -> str:
    """Validate, store and start a workflow; return its id at once."""
    flow_id, state = prepare(source, notify)
    runtime.store().create(flow_id, state)
    dispatch_ready(flow_id)
    return flow_id


def dispatch_ready(flow_id: str) -> list[str]:
    """Claim and submit every pending step whose needs all succeeded; return their names.
    (The start of a workflow; O(steps), once.)"""
    return transitions.start(flow_id)


def get_state(flow_id: str) -> dict | None:
    """The whole workflow: {id, name, state, created, ended, notify, defaults, steps}."""
    return runtime.store().load(flow_id)


def summary_state(flow_id: str) -> dict | None:
    """get_state's shape with only the failed and in-flight steps, plus ``total`` and
    ``counts`` (steps per state): cheap whatever the workflow's size."""
    return runtime.store().summary(flow_id)


def wait(flow_id: str, timeout: float = 600, interval: float = 0.1) -> dict:
    """Block until the workflow ends; return its final state."""
    deadline = time.monotonic() + timeout
    store = runtime.store()
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
    store = runtime.store()
    reply = store.cancel(flow_id, time.time())
    if reply.task_ids:
        # SIGUSR1 raises SoftTimeLimitExceeded in the task: statement cancelled,
        # agent process group killed; queued ones are dropped by every worker.
        runtime.app().control.revoke(list(reply.task_ids), terminate=True, signal="SIGUSR1")
    if reply.applied:
        transitions.send_notice(store, flow_id)
    state = get_state(flow_id)
    if state is None:
        raise KeyError(store.missing(flow_id))
    return state


def _peek(source) -> Mapping | None:
    try:
        return load(source)
    except FlowSpecError:
        return None
