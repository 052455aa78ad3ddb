"""Completion notices (webhook, file) and priority ordering on a saturated worker."""
from __future__ import annotations

import json
import queue as queue_module
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from celeryapp import flows
from tasks.agent import run_agent
from tasks.errors import InvalidRequest
from tasks.query import run_query

WAIT = 90


@pytest.fixture
def webhook():
    """A local HTTP server that records POSTed JSON; the first answer can be a 503."""
    received: queue_module.Queue = queue_module.Queue()
    failures = {"left": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_response(503)
                self.end_headers()
                return
            received.put(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}/hook"
    server.received = received
    server.failures = failures
    yield server
    server.shutdown()


def test_workflow_webhook_and_file_are_delivered_once(shared_worker, webhook, tmp_path):
    webhook.failures["left"] = 1  # the first delivery fails: it must be retried
    flow_id = flows.submit({"name": "notified", "steps": {
        "ok": {"query": "SELECT 1"}, "bad": {"query": "SELEC 1"}}},
        notify={"webhook": webhook.url, "dir": str(tmp_path)})
    notice = webhook.received.get(timeout=WAIT)
    assert notice["id"] == flow_id and notice["kind"] == "flow"
    assert notice["state"] == "failed"
    assert notice["summary"]["steps"]["bad"]["state"] == "failed"
    written = json.loads((tmp_path / f"{flow_id}.json").read_text())
    assert written["state"] == "failed"
    time.sleep(2)
    assert webhook.received.empty(), "delivered more than once"


def test_task_notice_from_a_plain_delay(shared_worker, webhook):
    result = run_query.delay("SELECT 3 AS n", notify={"webhook": webhook.url})
    notice = webhook.received.get(timeout=WAIT)
    assert notice == {"id": result.id, "kind": "task", "state": "SUCCESS",
                      "summary": {"row_count": 1, "truncated": False, "engine": "duckdb",
                                  "elapsed_s": notice["summary"]["elapsed_s"]}}


def test_bad_notify_spec_is_refused_at_submit():
    with pytest.raises(InvalidRequest, match="webhook must be an http"):
        run_query.delay("SELECT 1", notify={"webhook": "ftp://x"})


def test_critical_task_overtakes_low_ones_on_a_saturated_worker(start_worker):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    start_worker(queues=queue, concurrency=1, env={"TURBO_AGENT_CONCURRENCY": "1"})
    blocker = run_agent.delay("blocker [fake:sleep=2]", queue=queue, timeout=60)
    deadline = time.monotonic() + WAIT
    while blocker.state != "STARTED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lows = [run_query.delay(f"SELECT {i}", queue=queue, priority="low") for i in range(20)]
    critical = run_query.delay("SELECT 'critical'", queue=queue, priority="critical")
    for pending in [blocker, *lows, critical]:
        pending.get(timeout=WAIT)

    def done_at(res):
        return res._get_task_meta()["date_done"]

    overtaken = sum(done_at(low) > done_at(critical) for low in lows)
    # the worker may hold one low task already reserved behind the blocker
    assert overtaken >= 19, f"critical ran after {20 - overtaken} of 20 low tasks"


def test_a_workflow_notice_whose_sender_died_is_sent_by_the_repair_pass(shared_worker, webhook):
    """The notice is an outbox entry (flows.lua's notice): a sender that took it and died
    before sending it leaves it "sending"; past the grace the repair pass sends it. (One
    that died after sending it is deduplicated by turbo.notify's own marker.)"""
    from celeryapp.flows import layout, runtime

    flow_id = flows.submit({"name": "resent", "steps": {"ok": {"query": "SELECT 1"}}},
                           notify={"webhook": webhook.url})
    assert webhook.received.get(timeout=WAIT)["id"] == flow_id
    store = runtime.store()
    assert store.client.hget(layout.key(flow_id, "meta"), "notice") == b"sent"
    # as if the sender had died between taking the notice and sending it, long ago
    store.client.delete(f"turbo:notified:flow:{flow_id}")
    store.client.hset(layout.key(flow_id, "meta"), mapping={"notice": "sending",
                                                            "notice_at": 0, "ended": 1})
    store.client.zadd("turbo:flows:running", {flow_id: time.time()})
    flows.repair()  # (or the worker's own repair thread, whichever comes first)
    again = webhook.received.get(timeout=WAIT)
    assert again["id"] == flow_id and again["state"] == "succeeded"
    assert store.client.hget(layout.key(flow_id, "meta"), "notice") == b"sent"
    assert flows.repair()["notices"] == 0
    time.sleep(2)
    assert webhook.received.empty(), "sent again more than once"
