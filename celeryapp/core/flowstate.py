"""How a workflow's records read back: shared by the engine (celeryapp/flows/layout.py,
redis-py replies) and the ``turbo`` shell (raw RESP replies), which imports core only.

Standard library only. The layout itself (keys, fields) is described in
celeryapp/flows/layout.py.
"""
from __future__ import annotations

import json

TERMINAL = ("succeeded", "failed", "skipped", "cancelled")
IN_FLIGHT = ("dispatching", "queued", "running")
STATES = ("pending", *IN_FLIGHT, *TERMINAL)
INFO_FIELDS = ("task_id", "worker", "started", "ended", "attempts", "error", "skipped_because")
NO_INFO = dict.fromkeys(INFO_FIELDS)  # a step's fields before its record says otherwise


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat) -> dict[str, bytes | str]:
    """A HGETALL reply (a flat list from RESP, a dict from redis-py) as a dict."""
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat or ()), 2)}


def _as_dict(flat) -> dict:
    """A hash reply as a dict with its keys as they came (a flat RESP list or a dict)."""
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat or ()), 2)}


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
    # keys stay as they came (bytes from a HGETALL, str from a HMGET by name): the four
    # replies agree, and 10,000 names are decoded once instead of 40,000 keys
    specs, states, infos, results = (_as_dict(specs), _as_dict(states), _as_dict(infos),
                                     _as_dict(results))
    names = list(specs)
    spec_docs = dict(zip(names, _many(specs[n] for n in names)))
    order = sorted(names, key=lambda n: (spec_docs[n].get("i", 0), _text(n)))
    # decoded in step order, one json.loads each; a step's record dict becomes its entry
    # (no copy field by field: 10,000 steps)
    info_docs = _many(infos.get(n, b"{}") for n in order)
    result_docs = _many(results.get(n, b"null") for n in order)
    steps = {}
    for name, info, result in zip(order, info_docs, result_docs):
        static = spec_docs[name]
        state = states.get(name, b"?")
        step = {"kind": static.get("kind"), "needs": static.get("needs", []),
                "state": state.decode() if isinstance(state, bytes) else state,
                **NO_INFO, **info}
        step.pop("claimed", None)
        if step.get("queued") is None:
            step.pop("queued", None)
        step["attempts"] = step["attempts"] or 0
        step["result"] = result
        step["spec"] = static.get("spec") or {}
        if static.get("added_by"):
            step["added_by"] = static["added_by"]
        steps[_text(name)] = step
    return {"id": flow_id, "name": meta["name"], "state": meta["state"],
            "created": meta["created"], "ended": meta["ended"], "notify": meta["notify"],
            "defaults": meta["defaults"], "steps": steps}
