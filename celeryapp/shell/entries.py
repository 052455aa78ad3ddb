"""Tasks and workflows as the result backend stores them, read in one round trip each."""
from __future__ import annotations

from ..core import flowstate
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


# --- workflows: the layout of celeryapp/flows/layout.py, read with raw RESP and the
# engine's own reader (core/flowstate.py); tests/integration/test_flows.py checks both agree


def _flow_key(flow_id: str, part: str) -> str:
    return C.FLOW_KEYS_PREFIX.format(id=flow_id) + part


def flow_summary_line(flow: dict) -> str:
    """"9,990 succeeded, 8 running, 2 failed": a workflow's steps by state."""
    counts = flow.get("counts") or {}
    return ", ".join(f"{counts[s]:,} {s}" for s in flowstate.STATES if counts.get(s))


SMALL_FLOW = 40  # steps: a workflow up to this size is always read (and listed) whole


def fetch(client: resp.Redis, entries: list[Entry], steps: str = "all") -> list[Entry]:
    """Fill in the meta (tasks) or state (flows) of ``entries``: one round trip for the
    tasks' metas and the flows' meta hashes, then one more for the flows' steps.

    ``steps``: "all" (every step), "summary" (all of a small workflow, else only its
    failed and in-flight steps: ``flow["partial"]`` is then True), "none" (counts only).
    ``flow["counts"]`` (steps per state) and ``flow["total"]`` are always there."""
    commands, slots = [], []
    for entry in entries:
        if entry.kind in (None, "task"):
            commands.append(("GET", META_KEY.format(id=entry.id)))
            slots.append((entry, "meta"))
        if entry.kind in (None, "flow"):
            commands.append(("HGETALL", _flow_key(entry.id, "meta")))
            slots.append((entry, "flow"))
    flows = []
    if commands:
        for (entry, field), raw in zip(slots, client.pipeline(commands), strict=True):
            if field == "meta":
                entry.meta = load_meta(raw)
            else:
                found = flowstate.read_meta(raw)
                entry.flow = None
                if found is not None:
                    flows.append((entry, found))
    if flows:
        _fetch_steps(client, flows, steps)
    return entries


PARTS = ("spec", "state", "info", "result")


def _fetch_steps(client: resp.Redis, flows: list, steps: str) -> None:
    commands, plans = [], []
    for entry, found in flows:
        if steps == "none":
            plans.append((entry, found, "none"))
        elif steps == "all" or found["total"] <= SMALL_FLOW:
            commands += [("HGETALL", _flow_key(entry.id, part)) for part in PARTS]
            plans.append((entry, found, "all"))
        else:
            commands += [("SMEMBERS", _flow_key(entry.id, "failed")),
                         ("SMEMBERS", _flow_key(entry.id, "inflight"))]
            plans.append((entry, found, "some"))
    replies = iter(client.pipeline(commands)) if commands else iter(())
    picked, hmget = [], []
    for entry, found, plan in plans:
        if plan == "all":
            records = [next(replies) for _ in PARTS]
            _set_flow(entry, found, records, partial=False)
        elif plan == "none":
            _set_flow(entry, found, [[]] * len(PARTS), partial=found["total"] > 0)
        else:
            names = sorted({n.decode() for n in next(replies) + next(replies)} - {""})
            picked.append((entry, found, names))
            if names:
                hmget += [("HMGET", _flow_key(entry.id, part), *names) for part in PARTS]
    replies = iter(client.pipeline(hmget)) if hmget else iter(())
    for entry, found, names in picked:
        records = []
        for _ in PARTS:
            values = next(replies) if names else []
            records.append({n: v for n, v in zip(names, values, strict=True) if v is not None})
        _set_flow(entry, found, records, partial=True)


def _set_flow(entry: Entry, found: dict, records, partial: bool) -> None:
    flow = flowstate.assemble(entry.id, found, *records)
    flow.update(total=found["total"], counts=found["counts"], partial=partial)
    entry.flow = flow


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
    scores = dict(zip(index[::2], index[1::2], strict=True))
    for tag, raw in zip(unacked[::2], unacked[1::2], strict=True):
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
    for member, score in zip(raw[::2], raw[1::2], strict=True):
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
    return {e.id: float(s) for e, s in zip(entries, scores, strict=True) if s is not None}
