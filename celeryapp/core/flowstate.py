"""How a workflow's records read back: shared by the engine (celeryapp/flows/layout.py,
redis-py replies) and the ``turbo`` shell (raw RESP replies), which imports core only.

Standard library (orjson when installed). The layout itself (keys, fields) is described in
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
    order. ``specs``/``states``/``infos``/``results`` are hash replies (all steps or some).

    Built as one JSON text decoded by one call (10,000 steps: no dict built or copied
    field by field in Python). Each step's object is its records' bytes side by side: the
    defaults of the info fields, then its info record's fields (a JSON object keeps the
    last of repeated keys, so a recorded field replaces its default), its state and result
    summary, then its static record without its order ``i``."""
    specs, states, infos, results = (_as_dict(specs), _as_dict(states), _as_dict(infos),
                                     _as_dict(results))
    rows = sorted(_static_row(name, static) for name, static in specs.items())
    text = [b"{"]
    for _, key, rest, name in rows:
        info = _bytes(infos.get(name, b"{}"))
        text += (_quoted(key), _DEFAULTS, info[1:-1] + b"," if len(info) > 2 else b"",
                 b'"state":"', _bytes(states.get(name, b"?")), b'","result":',
                 _bytes(results.get(name, b"null")), b",", rest, b",")
    text[-1] = b"}" if rows else b"{}"
    steps = _loads(b"".join(text))
    for step in steps.values():  # the engine's own marks, not part of the answer
        step.pop("claimed", None)
        step.pop("tag", None)
    return {"id": flow_id, "name": meta["name"], "state": meta["state"],
            "created": meta["created"], "ended": meta["ended"], "notify": meta["notify"],
            "defaults": meta["defaults"], "steps": steps}


# a step's info fields before its record says otherwise: '"name":' + this opens its object
_DEFAULTS = b":" + json.dumps(NO_INFO | {"attempts": 0}, separators=(",", ":")).encode()[:-1] \
    + b","
_STATIC_HEAD = b'{"i":'  # layout.static_json writes the order first, compactly


def _static_row(name, static) -> tuple[int, bytes, bytes, object]:
    """(order, name as bytes, the static record's other members and closing brace, name
    as the reply gave it)."""
    static = _bytes(static)
    if static.startswith(_STATIC_HEAD):
        cut = static.find(b",", len(_STATIC_HEAD))
        if cut > 0:
            return int(static[len(_STATIC_HEAD):cut]), _bytes(name), static[cut + 1:], name
    doc = json.loads(static)  # not in static_json's form: decode it
    order = doc.pop("i", 0) if isinstance(doc, dict) else 0
    rest = json.dumps(doc if isinstance(doc, dict) else {}, separators=(",", ":")).encode()
    return order, _bytes(name), (rest[1:] if len(rest) > 2 else b'"kind":null}'), name


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _quoted(name: bytes) -> bytes:
    """A step name as a JSON string (validated names need no escaping)."""
    if name.replace(b"_", b"").isalnum():
        return b'"' + name + b'"'
    return json.dumps(name.decode()).encode()


def _loads(text: bytes):
    """orjson when installed (twice as fast on 5 MB); json for what orjson refuses
    (integers beyond 64 bits, NaN in a stored result summary)."""
    try:
        import orjson
    except ImportError:
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
