"""Task events leave the worker in batches (celeryapp/overrides/consumer.py) and none is lost.

Read straight off Redis: every message on the ``celeryev`` fanout channels is
decoded, so the test sees both what a monitor receives (each task's
received/started/succeeded events) and how many messages carried them.
"""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest

from support.helpers import wait_for


class EventTap:
    """PSUBSCRIBEs to the event channels and decodes every message (one or a batch)."""

    def __init__(self, client):
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe("*celeryev*")
        self.messages = 0
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if not message or message["type"] != "pmessage":
                continue
            envelope = json.loads(message["data"])
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            decoded = json.loads(body)
            self.messages += 1
            self.events.extend(decoded if isinstance(decoded, list) else [decoded])

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.events) if e.get("uuid") == task_id]

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


@pytest.fixture
def tap(broker_client):
    tap = EventTap(broker_client)
    time.sleep(0.3)  # the PSUBSCRIBE is in place before anything is sent
    yield tap
    tap.close()


def test_every_task_event_arrives_in_fewer_messages(celery_app, start_worker, tap):
    from tasks.query import run_query

    host = f"ev-{uuid.uuid4().hex[:6]}"
    start_worker(host, queues=f"host.{host}")
    results = [run_query.delay(f"SELECT {i} AS n", host=host) for i in range(30)]
    for result in results:
        result.get(timeout=120)
    wanted = ["task-received", "task-started", "task-succeeded"]

    def all_seen():
        return all(sorted(tap.of(r.id)) == sorted(wanted) for r in results)

    wait_for(all_seen, 10, "three events per task")
    task_events = sum(len(tap.of(r.id)) for r in results)
    assert task_events == 90
    # 90 task events plus heartbeats went out in far fewer messages than events
    assert tap.messages < len(tap.events) / 2, (tap.messages, len(tap.events))


def test_events_buffered_at_shutdown_are_sent(celery_app, start_worker, tap):
    """A warm shutdown while events wait for their batch sends them instead of dropping
    them (a 60 s flush delay: only the shutdown can have sent them)."""
    from tasks.query import run_query

    host = f"ev-{uuid.uuid4().hex[:6]}"
    worker = start_worker(host, queues=f"host.{host}", env={"TURBO_EVENT_FLUSH_DELAY": "60"})
    result = run_query.delay("SELECT 1 AS n", host=host)
    result.get(timeout=120)
    time.sleep(0.5)
    assert tap.of(result.id) == []  # held back, as configured
    worker.stop()
    wait_for(lambda: "task-succeeded" in tap.of(result.id), 10, "the task-succeeded event")
    assert any(e["type"] == "worker-offline" for e in tap.events)
