"""Redelivery: a message of a task that already ended is acknowledged without running;
a task whose worker process died runs again, but a poison message only a bounded number
of times.

kombu restores an unacknowledged message (its worker died, or the visibility timeout
passed) with ``headers.redelivered`` and ``delivery_info.redelivered`` set
(``kombu.transport.redis.Channel._do_restore_message``); the test does to a finished
task's message exactly that and puts it back on its queue."""
from __future__ import annotations

import json
import time

import pytest

from support.crash_task import CRASH_TASK, crash_worker
from support.helpers import unique_queue, wait_for
from tasks.agent import run_agent
from tasks.errors import TaskCrashed

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


# --- a task that kills its worker process --------------------------------------------
def test_a_task_whose_process_died_runs_again(start_worker, celery_app, tmp_path):
    queue = unique_queue()
    worker = crash_worker(start_worker, queue)
    marker = tmp_path / "runs"
    handle = celery_app.send_task(CRASH_TASK, (str(marker), 1), queue=queue)
    assert handle.get(timeout=WAIT) == "ran 2 times"  # killed once, requeued, done
    assert worker.process.poll() is None


def test_a_poison_message_ends_failed_after_bounded_requeues(start_worker, celery_app,
                                                            tmp_path):
    queue = unique_queue()
    worker = crash_worker(start_worker, queue, TURBO_WORKER_LOST_REQUEUES="2")
    marker = tmp_path / "runs"
    handle = celery_app.send_task(CRASH_TASK, (str(marker),), queue=queue)
    with pytest.raises(TaskCrashed) as caught:
        handle.get(timeout=WAIT)
    assert "died 3 times" in str(caught.value)
    assert "TURBO_WORKER_LOST_REQUEUES=2" in str(caught.value)
    assert len(marker.read_text().splitlines()) == 3  # the first run and two requeues
    time.sleep(2)
    assert len(marker.read_text().splitlines()) == 3  # and no more: it is not looping
    assert worker.process.poll() is None  # the worker lives on
    assert celery_app.backend.get_task_meta(handle.id, cache=False)["status"] == "FAILURE"
