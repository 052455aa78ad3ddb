"""A redelivered message of a task that already ended is acknowledged without running.

kombu restores an unacknowledged message (its worker died, or the visibility timeout
passed) with ``headers.redelivered`` and ``delivery_info.redelivered`` set
(``kombu.transport.redis.Channel._do_restore_message``); the test does to a finished
task's message exactly that and puts it back on its queue."""
from __future__ import annotations

import json
import time

from support.helpers import unique_queue, wait_for

from tasks.agent import run_agent

WAIT = 60


def restored(payload: bytes) -> bytes:
    message = json.loads(payload)
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True
    return json.dumps(message).encode()


def queue_key(broker_client, queue: str) -> bytes:
    """The Redis list holding the queue's messages (kombu adds a priority suffix)."""
    return wait_for(lambda: next(iter(broker_client.scan_iter(match=f"{queue}*")), None),
                    10, f"the list of {queue}")


def starts(log) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if json.loads(line)["event"] == "start")


def test_a_finished_task_redelivered_does_not_run_again(start_worker, broker_client,
                                                        celery_app, tmp_path):
    queue = unique_queue()
    log = tmp_path / "runs.log"
    handle = run_agent.apply_async((f"bill me once [fake:log={log}]",), queue=queue)
    key = queue_key(broker_client, queue)
    payload = broker_client.lindex(key, 0)  # the message, before any worker has it
    worker = start_worker(queues=queue, concurrency=1)
    first = handle.get(timeout=WAIT)
    assert starts(log) == 1
    broker_client.lpush(key, restored(payload))  # as kombu restores an unacked message
    wait_for(lambda: broker_client.llen(key) == 0, WAIT, "the redelivered message taken")
    wait_for(lambda: "acknowledged without running it again" in worker.log(), WAIT,
             "the worker to skip it")
    time.sleep(1)
    assert starts(log) == 1  # the agent did not run (nor bill) a second time
    meta = celery_app.backend.get_task_meta(handle.id, cache=False)
    assert meta["status"] == "SUCCESS" and meta["result"]["session_id"] == first["session_id"]
    wait_for(lambda: all(handle.id.encode() not in value
                         for value in broker_client.hvals("unacked")), WAIT,
             "the redelivered message acknowledged")


def test_a_redelivered_task_that_had_not_ended_runs(start_worker, broker_client, tmp_path):
    queue = unique_queue()
    log = tmp_path / "runs.log"
    handle = run_agent.apply_async((f"run me [fake:log={log}]",), queue=queue)
    key = queue_key(broker_client, queue)
    broker_client.lpush(key, restored(broker_client.rpop(key)))  # redelivered, never ended
    start_worker(queues=queue, concurrency=1)
    assert handle.get(timeout=WAIT)["is_error"] is False
    assert starts(log) == 1
