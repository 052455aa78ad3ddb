"""Where a workflow lives in Redis, and how its records read back (standard library only).

One workflow is nine keys in the result backend's Redis, all expiring with the results
(``result_expires``), plus its id in one global sorted set while it runs::

    turbo:flow:<id>:meta      hash  name, state, created, ended, notify (JSON), defaults (JSON),
                                    total, n:<state> (steps per state), notice (due|
                                    sending|sent: an outbox), notice_at
    turbo:flow:<id>:spec      hash  step -> static JSON {i (order), kind, needs, spec, added_by}
    turbo:flow:<id>:children  hash  step -> JSON list of the steps that need it
    turbo:flow:<id>:state     hash  step -> pending|dispatching|queued|running|succeeded|...
    turbo:flow:<id>:info      hash  step -> JSON {task_id, claimed, queued, worker, started,
                                    ended, attempts, error, skipped_because, tag (the
                                    delivery tag of the message running it)}
    turbo:flow:<id>:result    hash  step -> JSON result summary (notices.summary: bounded)
    turbo:flow:<id>:pending   hash  step -> needs not yet succeeded (the fan-in counter)
    turbo:flow:<id>:inflight  set   steps dispatching, queued or running (+ "" placeholder)
    turbo:flow:<id>:failed    set   failed steps (+ "" placeholder, so the set never vanishes
                                    and keeps its expiry)
    turbo:flows:running       zset  running workflow ids (score: created) - the repair pass

Every change is one command of ``flows.lua`` (:func:`script`, run by :mod:`.store`; the
``turbo`` shell runs its ``create``). Standard library and core only. Both the workers and
the ``turbo`` shell (raw RESP; it imports core only) read these keys with
celeryapp/core/flowstate.py; tests/integration/test_flows.py checks they agree.
"""
from __future__ import annotations

import hashlib
import json

from ..core import lua
from ..core.names import FLOW_KEYS_PREFIX, FLOWS_RUNNING_KEY

PARTS = ("meta", "spec", "children", "state", "info", "result", "pending", "inflight", "failed")
MAX_ERROR = 4000  # characters of a step's error kept in its record


def script() -> str:
    """The text of flows.lua, every workflow transition (read once per process)."""
    return lua.source(__package__, "flows.lua")


def key(flow_id: str, part: str) -> str:
    return FLOW_KEYS_PREFIX.format(id=flow_id) + part


def keys(flow_id: str) -> list[str]:
    """KEYS of every flows.lua command: the nine per-workflow keys, then the running set."""
    return [key(flow_id, part) for part in PARTS] + [FLOWS_RUNNING_KEY]


def step_task_id(flow_id: str, step: str) -> str:
    """The task id of a step: derived from the workflow and the step, so that a step is
    published again (repair) under the same id. flows.lua computes the same."""
    h = hashlib.sha1(f"{flow_id}/{step}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def creation_args(flow_id: str, state: dict, expires: int) -> list:
    """flows.lua ``create``'s own arguments for a prepared workflow (api.prepare): its
    meta fields, its steps and the keys' expiry."""
    steps = state["steps"]
    children: dict[str, list[str]] = {name: [] for name in steps}
    for name, step in steps.items():
        for need in step["needs"]:
            children[need].append(name)
    meta = {"id": flow_id, "name": state["name"], "state": state["state"],
            "created": repr(float(state["created"])),
            "notify": json.dumps(state["notify"]) if state.get("notify") else "",
            "defaults": json.dumps(state.get("defaults") or {})}
    rows = [[name, static_json(index, step), json.dumps(children[name]), len(step["needs"])]
            for index, (name, step) in enumerate(steps.items())]
    return [json.dumps(meta), json.dumps(rows), expires]


def creation_command(flow_id: str, state: dict, expires: int) -> tuple:
    """flows.lua ``create`` as one EVAL command (the ``turbo`` shell's raw RESP, which
    sends the script's text: no EVALSHA, so no NOSCRIPT to handle)."""
    names = keys(flow_id)
    return ("EVAL", script(), len(names), *names,
            "create", flow_id, *creation_args(flow_id, state, expires))


def static_json(index: int, step: dict) -> str:
    doc = {"i": index, "kind": step["kind"], "needs": step["needs"], "spec": step["spec"]}
    if step.get("added_by"):
        doc["added_by"] = step["added_by"]
    return json.dumps(doc, separators=(",", ":"))
