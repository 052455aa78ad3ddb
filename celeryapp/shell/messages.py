"""Celery protocol-2 task messages, byte for byte as kombu's Redis transport stores them.

What ``task.apply_async()`` does on Redis, without Celery:

* ``celery.app.amqp.AMQP.as_task_v2`` builds headers, properties and the body
  ``[args, kwargs, {callbacks, errbacks, chain, chord}]``;
* kombu's virtual channel wraps it as ``{"body", "content-encoding",
  "content-type", "headers", "properties"}`` with the JSON body base64-encoded
  (``body_encoding``) and ``delivery_info`` = anonymous exchange + queue name;
* ``kombu.transport.redis.Channel._put`` LPUSHes it onto the list for the
  message's priority step: the bare queue name for step 0, else
  ``<queue><sep><step>`` (``queries``, ``queries:3``, ``queries:6``, ...);
* the queue's binding is declared (SADD ``_kombu.binding.<queue>``) and, when
  ``task_send_sent_event`` is on (TURBO_SEND_SENT_EVENT), a ``task-sent`` event
  is PUBLISHed on ``/<db>.celeryev/task.sent`` for Flower.

``tests/integration/test_shell_protocol.py`` compares the result with what Celery writes.
"""
from __future__ import annotations

import binascii
import os
import time

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - CPython always has _json
    from json.encoder import encode_basestring_ascii as _quote

from ..core.names import PRIORITY_STEPS, QUEUE_SEP

ARGSREPR_MAXSIZE = 1024  # celery.app.amqp.AMQP.argsrepr_maxsize / kwargsrepr_maxsize
BINDING_KEY = "_kombu.binding.{queue}"
BINDING_PERMANENT_KEY = "_kombu.binding_permanent.{queue}"
EVENT_EXCHANGE = "celeryev"
DELIVERY_PERSISTENT = 2
DELIVERY_TRANSIENT = 1


def new_id() -> str:
    """A random UUID4 string, like ``celery.utils.uuid`` (without importing uuid)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def nodename() -> str:
    """``turbo<pid>@<host>``: the message's ``origin`` (Celery's is ``gen<pid>@<host>``)."""
    return f"turbo{os.getpid()}@{os.uname().nodename}"


def queue_key(queue: str, priority: int, steps=PRIORITY_STEPS, sep: str = QUEUE_SEP) -> str:
    """The Redis list kombu uses for ``queue`` at ``priority`` (``Channel._q_for_pri``)."""
    priority = max(0, min(int(priority), 9))
    step = steps[0]
    for candidate in steps:  # the highest step <= priority, like bisect(steps, n) - 1
        if candidate <= priority:
            step = candidate
    return f"{queue}{sep}{step}" if step else queue


def short_repr(value, maxsize: int = ARGSREPR_MAXSIZE) -> str:
    """``argsrepr``/``kwargsrepr``: repr, cut at ``maxsize`` like Celery's saferepr."""
    text = repr(value)
    return text if len(text) <= maxsize else text[:maxsize] + "..."


def _kombu_payload(body: bytes, headers: dict, properties: dict) -> dict:
    properties.update(body_encoding="base64", delivery_tag=new_id())
    return {
        "body": binascii.b2a_base64(body, newline=False).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }


class TaskMessage:
    """One task message, ready to publish with :meth:`commands`."""

    __slots__ = ("id", "name", "queue", "priority", "key", "payload", "event")

    def __init__(self, id, name, queue, priority, key, payload, event):
        self.id, self.name, self.queue, self.priority = id, name, queue, priority
        self.key, self.payload, self.event = key, payload, event

    def commands(self, db: int, *, sent_event: bool = False) -> list[tuple]:
        """Redis commands that publish it on the broker database ``db``."""
        member = QUEUE_SEP.join((self.queue, "", self.queue))
        commands = [
            ("SADD", BINDING_KEY.format(queue=self.queue), member),
            ("SADD", BINDING_PERMANENT_KEY.format(queue=self.queue), member),
            ("LPUSH", self.key, dumps(self.payload)),
        ]
        if sent_event and self.event is not None:
            topic = f"/{db}.{EVENT_EXCHANGE}/task.sent"
            commands.append(("PUBLISH", topic, dumps(self.event)))
        return commands


def task_message(name: str, args=(), kwargs=None, *, queue: str, priority: int = 6,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 task_id: str | None = None, root_id: str | None = None,
                 parent_id: str | None = None, origin: str | None = None,
                 reply_to: str | None = None, retries: int = 0,
                 headers: dict | None = None) -> TaskMessage:
    """Build the message ``apply_async(args, kwargs, queue=..., priority=...)`` sends.

    ``time_limit`` is the hard limit, ``soft_time_limit`` the soft one; the
    header keeps Celery's order ``timelimit: [hard, soft]``.
    """
    if not isinstance(args, (list, tuple)):
        raise TypeError("task args must be a list or tuple")
    kwargs = dict(kwargs or {})
    task_id = task_id or new_id()
    root_id = root_id or task_id
    origin = origin or nodename()
    argsrepr, kwargsrepr = short_repr(tuple(args)), short_repr(kwargs)
    message_headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": origin,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    if headers:
        message_headers.update(headers)
    body = dumps([list(args), kwargs, {"callbacks": None, "errbacks": None,
                                            "chain": None, "chord": None}]).encode()
    properties = {
        "correlation_id": task_id,
        "reply_to": reply_to or new_id(),
        "delivery_mode": DELIVERY_PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
    }
    payload = _kombu_payload(body, message_headers, properties)
    event_body = dumps({
        "hostname": origin, "utcoffset": utcoffset(), "pid": os.getpid(), "clock": 0,
        "uuid": task_id, "root_id": root_id, "parent_id": parent_id, "name": name,
        "args": argsrepr, "kwargs": kwargsrepr, "retries": retries, "eta": None,
        "expires": None, "queue": queue, "exchange": "", "routing_key": queue,
        "timestamp": time.time(), "type": "task-sent",
    }).encode()
    event = _kombu_payload(event_body, {"hostname": origin}, {
        "delivery_mode": DELIVERY_TRANSIENT,
        "delivery_info": {"exchange": EVENT_EXCHANGE, "routing_key": "task.sent"},
        "priority": 0,
    })
    return TaskMessage(task_id, name, queue, priority, queue_key(queue, priority), payload, event)


def dumps(value) -> str:
    """``json.dumps(value)`` for plain JSON data, without importing :mod:`json`.

    The json package (and the decoder it loads) costs more to import than a
    submit takes; the output is identical to ``json.dumps`` with its defaults
    (``", "`` and ``": "`` separators, ASCII escapes, NaN/Infinity allowed).
    Anything unusual (non-string keys, other types) is handed to json.dumps.
    """
    parts: list[str] = []
    try:
        _encode(value, parts.append)
    except _NotPlain:
        import json

        return json.dumps(value)
    return "".join(parts)


class _NotPlain(Exception):
    pass


def _encode(value, out) -> None:
    if isinstance(value, str):
        out(_quote(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(int.__repr__(value))
    elif isinstance(value, float):
        if value != value:
            out("NaN")
        elif value in (float("inf"), float("-inf")):
            out("Infinity" if value > 0 else "-Infinity")
        else:
            out(float.__repr__(value))
    elif isinstance(value, (list, tuple)):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(", ")
            _encode(item, out)
        out("]")
    elif isinstance(value, dict):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise _NotPlain
            if index:
                out(", ")
            out(_quote(key))
            out(": ")
            _encode(item, out)
        out("}")
    else:
        raise _NotPlain


def utcoffset() -> float:
    """Hours west of UTC, as ``celery.utils.time.utcoffset`` puts in events."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def decode(raw: bytes | str) -> dict:
    """A stored message with its body decoded (tests, debugging)."""
    import json

    message = json.loads(raw)
    if message.get("properties", {}).get("body_encoding") == "base64":
        message["body"] = json.loads(binascii.a2b_base64(message["body"]))
    return message
