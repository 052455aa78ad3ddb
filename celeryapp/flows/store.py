"""Workflow state in Redis: the keys of :mod:`.layout`, changed only by the commands of
``flows.lua`` (one atomic, idempotent command per transition, no lock; one method here
each, with a named reply: :mod:`.replies`), read in one pipeline. A command that meets a
connection error (Redis restarting, a failover, a blip) is run again for a bounded time:
being idempotent, running it twice is harmless."""
from __future__ import annotations

import gc
import json
import logging
import time
import weakref
from contextlib import contextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core import backoff
from ..core.flowstate import assemble, read_meta
from ..core.names import FLOWS_REPAIR_LOCK, FLOWS_RUNNING_KEY, RECENT_KEEP, RECENT_KEY
from ..core.text import as_text
from . import layout
from .replies import Cancelled, Claimed, Conflict, StartReply

log = logging.getLogger(__name__)

RETRYABLE = (RedisConnectionError, RedisTimeoutError)  # BusyLoadingError is a ConnectionError
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0  # the pauses while Redis is away
_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _script(client):
    """flows.lua registered on ``client`` (a forked pool child builds its own client)."""
    found = _scripts.get(client)
    if found is None:
        found = _scripts[client] = client.register_script(layout.script())
    return found


@contextmanager
def _no_gc():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


LEGACY_KEY = "turbo:flow:{}"  # a workflow stored before the per-step layout (one document)


class FlowStore:
    def __init__(self, client, expires: int, retry_for: float = 30.0):
        self.client = client
        self.expires = expires
        self.retry_for = retry_for

    # --- writing: one flows.lua command per change -------------------------------------
    def _retrying(self, flow_id: str, what: str, call):
        """``call()``, again on connection errors for up to ``retry_for`` seconds (the
        project's backoff from 0.05 s up to 2 s): every write here is idempotent."""
        deadline = time.monotonic() + self.retry_for
        for delay in backoff.pauses(RETRY_FIRST_S, RETRY_MAX_S):
            try:
                return call()
            except RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("workflow %s: %s: Redis unavailable (%s); again in %.2fs",
                            flow_id, what, exc, delay)
                time.sleep(delay)

    def _command(self, command: str, flow_id: str, *args, result_key: str | None = None):
        """Run flows.lua's ``command`` for ``flow_id`` (KEYS: the workflow's, then the
        task's result key when given), again on connection errors (:meth:`_retrying`)."""
        keys = layout.keys(flow_id) + ([result_key] if result_key else [])
        argv = [command, flow_id, *args]
        script = _script(self.client)
        return self._retrying(flow_id, f"{command} transition",
                              lambda: script(keys, argv, client=self.client))

    def create(self, flow_id: str, state: dict) -> None:
        """Store a prepared workflow (api.prepare); ValueError if its id exists."""
        argv = layout.creation_args(flow_id, state, self.expires)
        if not self._command("create", flow_id, *argv):
            raise ValueError(f"workflow {flow_id} exists already")
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(RECENT_KEY, {f"flow:{flow_id}": state["created"]})
        pipe.zremrangebyrank(RECENT_KEY, 0, -RECENT_KEEP - 1)
        pipe.execute()

    def start(self, flow_id: str, now: float) -> Claimed:
        """Claim every pending step whose needs all succeeded."""
        return Claimed.from_reply(self._command("start", flow_id, now))

    def started(self, flow_id: str, step: str, task_id: str, now: float, worker: str,
                attempt: int, tag: str = "", take_over: bool = False,
                result_key: str | None = None) -> StartReply:
        """The message ``tag`` starts this attempt of the step (flows.lua: ``started``);
        ``result_key``: the task's stored state, checked first."""
        return StartReply.from_reply(self._command(
            "started", flow_id, step, task_id, now, worker, attempt, tag,
            "1" if take_over else "", result_key=result_key))

    def mark_queued(self, flow_id: str, claimed: list[tuple[str, str]], now: float) -> None:
        """The "queued" transitions of published steps, in one round trip."""
        if not claimed:
            return
        script = _script(self.client)
        keys = layout.keys(flow_id)

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for step, task_id in claimed:
                script(keys, ["queued", flow_id, step, task_id, now], client=pipe)
            pipe.execute()

        self._retrying(flow_id, "queued transitions", send)

    def succeeded(self, flow_id: str, step: str, task_id: str, now: float, result: str,
                  added: str = "") -> Claimed | Conflict:
        """Record a success (``result``: its summary JSON) and add the steps it asks
        for (``added``: JSON rows, or ""); Conflict when an added name exists already."""
        reply = self._command("succeeded", flow_id, step, task_id, now, result, added)
        if as_text(reply[0]) == "conflict":
            return Conflict.from_reply(reply)
        return Claimed.from_reply(reply)

    def failed(self, flow_id: str, step: str, task_id: str, now: float,
               error: str) -> Claimed:
        """Record a failure; the step's descendants are skipped."""
        return Claimed.from_reply(self._command("failed", flow_id, step, task_id, now,
                                                "failed", error[:layout.MAX_ERROR]))

    def revoked(self, flow_id: str, step: str, task_id: str, now: float) -> Claimed:
        """Record a step's task revoked: the step is cancelled, its descendants skipped."""
        return Claimed.from_reply(self._command("failed", flow_id, step, task_id, now,
                                                "cancelled", ""))

    def cancel(self, flow_id: str, now: float) -> Cancelled:
        """Cancel every step not yet ended, and the workflow."""
        return Cancelled.from_reply(self._command("cancel", flow_id, now))

    def notice(self, flow_id: str, now: float, grace: float) -> bool:
        """True for the one caller that is to send the workflow's notice now."""
        return bool(int(self._command("notice", flow_id, now, grace)))

    def noticed(self, flow_id: str) -> None:
        """The notice went out."""
        self._command("noticed", flow_id)

    # --- reading ------------------------------------------------------------------------
    def meta(self, flow_id: str) -> dict | None:
        return read_meta(self.client.hgetall(layout.key(flow_id, "meta")))

    def load(self, flow_id: str) -> dict | None:
        """The whole workflow (get_state's shape): one pipeline of five HGETALLs."""
        pipe = self.client.pipeline(transaction=False)
        for part in ("meta", "spec", "state", "info", "result"):
            pipe.hgetall(layout.key(flow_id, part))
        meta, specs, states, infos, results = pipe.execute()
        meta = read_meta(meta)
        if meta is None:
            return None
        with _no_gc():  # tens of thousands of small dicts: no collection half-way
            return assemble(flow_id, meta, specs, states, infos, results)

    def steps(self, flow_id: str, names: list[str], parts=("spec", "state", "info")) -> dict:
        """Some steps' records: {part: {name: raw}} in one round trip."""
        if not names:
            return {part: {} for part in parts}
        pipe = self.client.pipeline(transaction=False)
        for part in parts:
            pipe.hmget(layout.key(flow_id, part), names)
        replies = pipe.execute()
        return {part: {name: value for name, value in zip(names, reply, strict=True)
                       if value is not None}
                for part, reply in zip(parts, replies, strict=True)}

    def summary(self, flow_id: str) -> dict | None:
        """Counts by state and the failed and in-flight steps, without reading every step."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(layout.key(flow_id, "meta"))
        pipe.smembers(layout.key(flow_id, "failed"))
        pipe.smembers(layout.key(flow_id, "inflight"))
        meta, failed, inflight = pipe.execute()
        meta = read_meta(meta)
        if meta is None:
            return None
        names = sorted({as_text(n) for n in failed | inflight} - {""})
        records = self.steps(flow_id, names, ("spec", "state", "info", "result"))
        state = assemble(flow_id, meta, records["spec"], records["state"],
                                records["info"], records["result"])
        state.update(total=meta["total"], counts=meta["counts"])
        return state

    def missing(self, flow_id: str) -> str:
        """Why ``flow_id`` has no state to read (an error message)."""
        if self.client.exists(LEGACY_KEY.format(flow_id)):
            return (f"workflow {flow_id!r} was stored by an earlier version of Agent Turbo (one "
                    f"document, {LEGACY_KEY.format(flow_id)}), which this version does not "
                    f"read; it expires with the results")
        return f"no workflow {flow_id!r} (expired or never submitted)"

    def inflight(self, flow_id: str) -> list[str]:
        return sorted({as_text(n) for n in self.client.smembers(layout.key(flow_id, "inflight"))}
                      - {""})

    def running(self) -> list[str]:
        return [as_text(m) for m in self.client.zrange(FLOWS_RUNNING_KEY, 0, -1)]

    def forget(self, flow_id: str) -> None:
        self.client.zrem(FLOWS_RUNNING_KEY, flow_id)

    def repair_turn(self, holder: str, every: float) -> bool:
        """True for one caller per ``every`` seconds, across every worker."""
        return bool(self.client.set(FLOWS_REPAIR_LOCK, holder, nx=True,
                                    px=max(1, int(every * 1000 * 0.9))))


def info_doc(raw) -> dict:
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
