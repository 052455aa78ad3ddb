"""Tasks and workflows as the result backend stores them, read in one round trip each."""
from __future__ import annotations

from ..core import names as C
from . import resp
from .common import FLOW_DONE, META_KEY, READY, broker


class Entry:
    """One task or workflow as stored in the result backend."""

    __slots__ = ("id", "kind", "submitted", "meta", "flow", "started")

    def __init__(self, id: str, kind: str | None = None, submitted: float | None = None):
        self.id, self.kind, self.submitted = id, kind, submitted
        self.meta = self.flow = self.started = None

    @property
    def is_flow(self) -> bool:
        return self.flow is not None or self.kind == "flow"

    @property
    def state(self) -> str:
        if self.flow is not None:
            return str(self.flow.get("state") or "?")
        if self.meta is None:
            return "PENDING"
        return str(self.meta.get("status") or "PENDING")

    @property
    def ready(self) -> bool:
        if self.is_flow:
            return self.flow is not None and self.state in FLOW_DONE
        return self.state in READY

    @property
    def ok(self) -> bool:
        return self.state in ("SUCCESS", "succeeded")

    @property
    def worker(self) -> str | None:
        meta = self.meta or {}
        worker = meta.get("worker")
        if not worker and isinstance(meta.get("result"), dict):
            worker = meta["result"].get("hostname") or meta["result"].get("worker")
        return worker

    @property
    def name(self) -> str:
        if self.is_flow:
            return f"flow:{(self.flow or {}).get('name') or '?'}"
        return (self.meta or {}).get("name") or "-"


def load_meta(raw):
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"status": "?", "result": raw.decode(errors="replace")[:200]}


def fetch(client: resp.Redis, entries: list[Entry]) -> list[Entry]:
    """Fill in the meta (tasks) or state (flows) of ``entries`` in one round trip."""
    commands, slots = [], []
    for entry in entries:
        if entry.kind in (None, "task"):
            commands.append(("GET", META_KEY.format(id=entry.id)))
            slots.append((entry, "meta"))
        if entry.kind in (None, "flow"):
            commands.append(("GET", C.FLOW_KEY.format(id=entry.id)))
            slots.append((entry, "flow"))
    if commands:
        for (entry, field), raw in zip(slots, client.pipeline(commands)):
            setattr(entry, field, load_meta(raw))
    return entries


def find_started(entries: list[Entry]) -> None:
    """When running tasks were delivered to their worker (kombu's unacked index).

    With acks late and prefetch 1 the delivery is (nearly) the start, so this
    gives a running time that Celery's result backend does not store.
    """
    import json

    running = {e.id: e for e in entries if e.meta and e.state in ("STARTED", "RETRY")}
    if not running:
        return
    b = broker()
    unacked, index = b.pipeline([("HGETALL", "unacked"),
                                 ("ZRANGE", "unacked_index", 0, -1, "WITHSCORES")])
    scores = dict(zip(index[::2], index[1::2]))
    for tag, raw in zip(unacked[::2], unacked[1::2]):
        if not any(task_id.encode() in raw for task_id in running):
            continue
        try:
            task_id = json.loads(raw)[0]["headers"]["id"]
        except (ValueError, LookupError, TypeError):
            continue
        if task_id in running and tag in scores:
            running[task_id].started = float(scores[tag])


def recent(client: resp.Redis, count: int) -> list[Entry]:
    raw = client.execute("ZREVRANGE", C.RECENT_KEY, 0, max(0, count - 1), "WITHSCORES")
    entries = []
    for member, score in zip(raw[::2], raw[1::2]):
        kind, _, entry_id = member.decode().partition(":")
        entries.append(Entry(entry_id, kind if kind in ("task", "flow") else None, float(score)))
    return entries


def known(entry: Entry) -> bool:
    return entry.meta is not None or entry.flow is not None or entry.submitted is not None


def submitted_times(r: resp.Redis, entries: list[Entry]) -> dict[str, float]:
    members = []
    for entry in entries:
        members.append(f"{'flow' if entry.flow is not None else 'task'}:{entry.id}")
    scores = r.pipeline([("ZSCORE", C.RECENT_KEY, m) for m in members])
    return {e.id: float(s) for e, s in zip(entries, scores) if s is not None}
