"""How a workflow's records read back: shared by the engine (celeryapp/flows/layout.py,
redis-py replies) and the ``turbo`` shell (raw RESP replies), which imports core only.

Standard library (orjson when installed). The layout itself (keys, fields) is described in
celeryapp/flows/layout.py.
"""
from __future__ import annotations

import json
import operator

from .text import as_text

TERMINAL = ("succeeded", "failed", "skipped", "cancelled")
IN_FLIGHT = ("dispatching", "queued", "running")
STATES = ("pending", *IN_FLIGHT, *TERMINAL)
INFO_FIELDS = ("task_id", "worker", "started", "ended", "attempts", "error", "skipped_because")
NO_INFO = dict.fromkeys(INFO_FIELDS)  # a step's fields before its record says otherwise


def pairs(flat) -> dict[str, bytes | str]:
    """A HGETALL reply (a flat list from RESP, a dict from redis-py) as a dict."""
    if isinstance(flat, dict):
        return {as_text(k): v for k, v in flat.items()}
    return {as_text(flat[i]): flat[i + 1] for i in range(0, len(flat or ()), 2)}


def _as_dict(flat) -> dict:
    """A hash reply as a dict with its keys as they came (a flat RESP list or a dict)."""
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat or ()), 2)}


def read_meta(raw) -> dict | None:
    meta = pairs(raw)
    if not meta:
        return None
    out = {"state": as_text(meta.get("state", b"?")), "name": as_text(meta.get("name", b"")),
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
    specs, states, infos, results = (_byte_values(specs), _byte_values(states),
                                     _byte_values(infos), _byte_values(results))
    rows = []  # (order, name as bytes, static members after the order, name as given)
    head = len(_STATIC_HEAD)
    for name, static in specs.items():
        cut = static.find(b",", head) if static.startswith(_STATIC_HEAD) else -1
        if cut > 0:
            rows.append((int(static[head:cut]), name if name.__class__ is bytes
                         else name.encode(), static[cut + 1:], name))
        else:
            rows.append(_static_row(name, static))
    rows.sort(key=_ORDER)
    # step names are validated identifiers: quoted as they are (one check for all)
    plain = b"".join(row[1] for row in rows).replace(b"_", b"").isalnum()
    info_of, state_of, result_of = infos.get, states.get, results.get
    text = [b"{"]
    add = text.extend
    for _, key, rest, name in rows:  # per step: no call but the lookups (10,000 steps)
        info = info_of(name, b"{}")
        add((b'"' + key + b'"' if plain else _quoted(key), _DEFAULTS,
             info[1:-1] + b"," if len(info) > 2 else b"", b'"state":"', state_of(name, b"?"),
             b'","result":', result_of(name, b"null"), b",", rest, b","))
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
_ORDER = operator.itemgetter(0, 1)


def _static_row(name, static: bytes) -> tuple[int, bytes, bytes, object]:
    """A static record not in static_json's form (decoded): (order, name as bytes, its
    other members and closing brace, name as the reply gave it)."""
    doc = json.loads(static)
    order = doc.pop("i", 0) if isinstance(doc, dict) else 0
    rest = json.dumps(doc if isinstance(doc, dict) else {}, separators=(",", ":")).encode()
    return order, _bytes(name), (rest[1:] if len(rest) > 2 else b'"kind":null}'), name


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _byte_values(reply) -> dict:
    """A hash reply as a dict whose values are bytes (redis-py and the shell's RESP give
    bytes: checked in one pass, converted only otherwise)."""
    found = _as_dict(reply)
    if set(map(type, found.values())) <= {bytes}:
        return found
    return {name: _bytes(value) for name, value in found.items()}


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
