"""Workflow state in Redis: one JSON document per workflow, changed under a per-workflow lock."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from ..core.names import FLOW_KEY, RECENT_KEEP, RECENT_KEY


class FlowStore:
    """Workflow state documents in Redis, changed only under a per-workflow lock."""

    def __init__(self, client, expires: int):
        self.client = client
        self.expires = expires

    def key(self, flow_id: str) -> str:
        return FLOW_KEY.format(id=flow_id)

    def create(self, state: dict) -> None:
        if not self.client.set(self.key(state["id"]), json.dumps(state), ex=self.expires, nx=True):
            raise ValueError(f"workflow {state['id']} exists already")
        pipe = self.client.pipeline()
        pipe.zadd(RECENT_KEY, {f"flow:{state['id']}": state["created"]})
        pipe.zremrangebyrank(RECENT_KEY, 0, -RECENT_KEEP - 1)
        pipe.execute()

    def load(self, flow_id: str) -> dict | None:
        raw = self.client.get(self.key(flow_id))
        return json.loads(raw) if raw else None

    @contextmanager
    def locked(self, flow_id: str) -> Iterator[dict]:
        # short polls: a step's start hook waits here before its task body runs
        lock = self.client.lock(f"{self.key(flow_id)}:lock", timeout=60, blocking_timeout=60,
                                sleep=0.005)
        if not lock.acquire():
            raise TimeoutError(f"workflow {flow_id}: state lock not acquired in 60 s")
        try:
            state = self.load(flow_id)
            if state is None:
                raise KeyError(f"no workflow {flow_id!r} (expired or never submitted)")
            yield state
            self.client.set(self.key(flow_id), json.dumps(state), ex=self.expires)
        finally:
            lock.release()
