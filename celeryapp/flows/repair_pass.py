"""The repair pass: progress that survives a lost transition or a lost publish.

A thread in each worker (celeryapp.worker.hooks; one worker at a time) runs
:func:`repair` every TURBO_FLOW_REPAIR_INTERVAL. It re-derives what is due from what is
stored: a step whose task ended without its transition being recorded (its worker died, or
Redis was away) gets the transition; a step claimed but never published is published
again under its one task id; a workflow with nothing in flight is started again (a lost
start); a notice whose sender died is sent again. Safe anywhere, any time: every change
is an idempotent transition (:mod:`.transitions`).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from ..config import get_settings
from ..core.text import as_text
from . import runtime, transitions
from .store import FlowStore, info_doc

log = logging.getLogger(__name__)

SETTLE = 2.0  # seconds a task's final state is left to its own hook before repair acts


def repair(grace: float | None = None, settle_after: float | None = None) -> dict[str, int]:
    """One pass over running workflows' in-flight steps: a step whose task ended gets its
    transition; a step claimed more than ``grace`` s ago (TURBO_FLOW_DISPATCH_GRACE) and
    never published is published again under the same task id; a workflow with nothing in
    flight is started again (a lost start). Safe to run anywhere, any time: every change
    is an idempotent transition. A task that ended less than ``settle_after`` s ago is left
    to its own hook: by default as long as the hook retries a transition
    (TURBO_FLOW_RETRY_SECONDS) plus 2 s, so that a step's ``on_complete`` is not run by
    both. Returns what it did (counts)."""
    settings = get_settings()
    grace = settings.flow_dispatch_grace if grace is None else grace
    if settle_after is None:
        settle_after = SETTLE + settings.flow_retry_seconds
    store = runtime.store()
    backend = runtime.app().backend
    done = {"flows": 0, "settled": 0, "republished": 0, "started": 0, "notices": 0}
    now = time.time()
    for flow_id in store.running():
        try:
            _repair_flow(store, backend, flow_id, grace, settle_after, now, done)
        except Exception as exc:  # noqa: BLE001 - one workflow's trouble does not stop the pass
            log.warning("workflow %s: repair failed: %r", flow_id, exc)
    return done


def _repair_flow(store: FlowStore, backend, flow_id: str, grace: float, settle_after: float,
                 now: float, done: dict[str, int]) -> None:
    found = store.meta(flow_id)
    if found is None:
        store.forget(flow_id)
        return
    if found["state"] != "running":
        if (found["ended"] or 0) < now - SETTLE:
            done["notices"] += transitions.send_notice(store, flow_id)
        return
    done["flows"] += 1
    names = store.inflight(flow_id)
    if not names:
        if (found["created"] or 0) < now - grace:
            done["started"] += len(transitions.start(flow_id))
        return
    _repair_steps(store, backend, flow_id, names, grace, settle_after, now, done)


def _repair_steps(store: FlowStore, backend, flow_id: str, names: list[str], grace: float,
                  settle_after: float, now: float, done: dict[str, int]) -> None:
    """In-flight steps: settle those whose task ended, publish again those never published."""
    records = store.steps(flow_id, names, ("state", "info"))
    steps = [(name, as_text(records["state"].get(name)), info_doc(records["info"].get(name)))
             for name in names]
    steps = [(n, s, i) for n, s, i in steps if i.get("task_id")]
    pipe = backend.client.pipeline(transaction=False)
    for _, _, info in steps:
        pipe.get(backend.get_key_for_task(info["task_id"]))
    for (name, state, info), raw in zip(steps, pipe.execute(), strict=True):
        task_meta = backend.decode_result(raw) if raw else None
        if task_meta and task_meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
            if _age(task_meta.get("date_done"), now) >= settle_after:
                transitions.settle(flow_id, name, info["task_id"], task_meta)
                done["settled"] += 1
        elif state == "dispatching" and task_meta is None \
                and (info.get("claimed") or 0) < now - grace:
            log.warning("workflow %s: step %s was claimed %.0fs ago and never published: "
                        "publishing it again", flow_id, name, now - info["claimed"])
            transitions.publish(store, flow_id, [(name, info["task_id"])])
            done["republished"] += 1


def _age(date_done, now: float) -> float:
    """Seconds since a task's ``date_done`` (inf when unknown or unreadable)."""
    if date_done is None:
        return float("inf")
    if isinstance(date_done, datetime):
        when = date_done
    else:
        try:
            when = datetime.fromisoformat(str(date_done))
        except ValueError:
            return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return now - when.timestamp()
