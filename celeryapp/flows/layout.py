"""Where a workflow lives in Redis, and how its records read back (standard library only).

One workflow is nine keys in the result backend's Redis, all expiring with the results
(``result_expires``), plus its id in one global sorted set while it runs::

    turbo:flow:<id>:meta      hash  name, state, created, ended, notify (JSON), defaults (JSON),
                                    total, n:<state> (steps per state), notice (due|sent)
    turbo:flow:<id>:spec      hash  step -> static JSON {i (order), kind, needs, spec, added_by}
    turbo:flow:<id>:children  hash  step -> JSON list of the steps that need it
    turbo:flow:<id>:state     hash  step -> pending|dispatching|queued|running|succeeded|...
    turbo:flow:<id>:info      hash  step -> JSON {task_id, claimed, queued, worker, started,
                                    ended, attempts, error, skipped_because}
    turbo:flow:<id>:result    hash  step -> JSON result summary (notices.summary: bounded)
    turbo:flow:<id>:pending   hash  step -> needs not yet succeeded (the fan-in counter)
    turbo:flow:<id>:inflight  set   steps dispatching, queued or running (+ "" placeholder)
    turbo:flow:<id>:failed    set   failed steps (+ "" placeholder, so the set never vanishes
                                    and keeps its expiry)
    turbo:flows:running       zset  running workflow ids (score: created) - the repair pass

Every change is one Lua script (:mod:`.scripts`). Standard library and core names only.
The ``turbo`` shell reads these keys with raw RESP and its own reader
(celeryapp/shell/entries.py: it imports core only); tests/integration/test_flows.py checks
that both read a workflow alike.
"""
from __future__ import annotations

import hashlib
import json

from ..core.names import FLOW_KEYS_PREFIX, FLOWS_RUNNING_KEY

PARTS = ("meta", "spec", "children", "state", "info", "result", "pending", "inflight", "failed")
TERMINAL = ("succeeded", "failed", "skipped", "cancelled")
IN_FLIGHT = ("dispatching", "queued", "running")
STATES = ("pending", *IN_FLIGHT, *TERMINAL)
INFO_FIELDS = ("task_id", "worker", "started", "ended", "attempts", "error", "skipped_because")
MAX_ERROR = 4000  # characters of a step's error kept in its record


def key(flow_id: str, part: str) -> str:
    return FLOW_KEYS_PREFIX.format(id=flow_id) + part


def keys(flow_id: str) -> list[str]:
    """KEYS of every script: the nine per-workflow keys, then the running set."""
    return [key(flow_id, part) for part in PARTS] + [FLOWS_RUNNING_KEY]


def step_task_id(flow_id: str, step: str) -> str:
    """The task id of a step: derived from the workflow and the step, so that a step is
    published again (repair) under the same id. The Lua scripts compute the same."""
    h = hashlib.sha1(f"{flow_id}/{step}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat) -> dict[str, bytes | str]:
    """A HGETALL reply (a flat list from RESP, a dict from redis-py) as a dict."""
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat or ()), 2)}


def _many(values) -> list:
    """JSON-decode many small documents in one json.loads call (fast for 10,000 steps)."""
    raw = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    return json.loads(b"[" + b",".join(raw) + b"]") if raw else []


def read_meta(raw) -> dict | None:
    meta = pairs(raw)
    if not meta:
        return None
    out = {"state": _text(meta.get("state", b"?")), "name": _text(meta.get("name", b"")),
           "created": _number(meta.get("created")), "ended": _number(meta.get("ended")),
           "notify": json.loads(meta["notify"]) if meta.get("notify") else None,
           "defaults": json.loads(meta["defaults"]) if meta.get("defaults") else {},
           "total": int(_number(meta.get("total")) or 0)}
    out["counts"] = {state: int(meta[f"n:{state}"]) for state in STATES
                     if int(meta.get(f"n:{state}", 0) or 0) > 0}
    return out


def _number(value):
    if value in (None, b"", ""):
        return None
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number


def assemble(flow_id: str, meta: dict, specs, states, infos, results) -> dict:
    """The workflow as ``get_state`` returns it: {id, name, state, created, ended, notify,
    defaults, steps: {name: {state, task_id, worker, ..., needs, kind, spec}}}, in spec
    order. ``specs``/``states``/``infos``/``results`` are hash replies (all steps or some)."""
    specs, states, infos, results = pairs(specs), pairs(states), pairs(infos), pairs(results)
    names = list(specs)
    spec_docs = dict(zip(names, _many(specs[n] for n in names)))
    with_info = [n for n in names if n in infos]
    info_docs = dict(zip(with_info, _many(infos[n] for n in with_info)))
    with_result = [n for n in names if n in results]
    result_docs = dict(zip(with_result, _many(results[n] for n in with_result)))
    steps = {}
    for name in sorted(names, key=lambda n: (spec_docs[n].get("i", 0), n)):
        static = spec_docs[name]
        info = info_docs.get(name) or {}
        step = {"kind": static.get("kind"), "needs": static.get("needs", []),
                "state": _text(states.get(name, b"?"))}
        for field in INFO_FIELDS:
            step[field] = info.get(field)
        step["attempts"] = step["attempts"] or 0
        if info.get("queued") is not None:
            step["queued"] = info["queued"]
        step["result"] = result_docs.get(name)
        step["spec"] = static.get("spec", {})
        if static.get("added_by"):
            step["added_by"] = static["added_by"]
        steps[name] = step
    return {"id": flow_id, "name": meta["name"], "state": meta["state"],
            "created": meta["created"], "ended": meta["ended"], "notify": meta["notify"],
            "defaults": meta["defaults"], "steps": steps}


def creation(flow_id: str, state: dict) -> tuple[list[str], list]:
    """(KEYS, ARGV) of the creation script for a prepared workflow (engine.prepare);
    ARGV ends with the expiry, which the caller appends."""
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
    return keys(flow_id), [json.dumps(meta), json.dumps(rows)]


def creation_command(flow_id: str, state: dict, expires: int) -> tuple:
    """The creation script as one EVAL command (the ``turbo`` shell's raw RESP)."""
    from .scripts import CREATE

    names, argv = creation(flow_id, state)
    return ("EVAL", CREATE, len(names), *names, *argv, expires)


def static_json(index: int, step: dict) -> str:
    doc = {"i": index, "kind": step["kind"], "needs": step["needs"], "spec": step["spec"]}
    if step.get("added_by"):
        doc["added_by"] = step["added_by"]
    return json.dumps(doc, separators=(",", ":"))
