"""The result backend's one-round-trip store (celeryapp/overrides/backend.py) on the test Redis.

The store script has to keep what Celery's GET-then-SET guaranteed - a stored
SUCCESS is never overwritten, subscribers hear every state, FAILURE keeps its own
expiry - and add the recent list that ``turbo ls`` reads.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import states
from celery.app.task import Context

from celeryapp.core.names import RECENT_KEEP, RECENT_KEY


@pytest.fixture
def backend(celery_app):
    return celery_app.backend


def meta_key(backend, task_id: str) -> str:
    return backend.get_key_for_task(task_id).decode()


def stored(backend, task_id: str) -> dict | None:
    raw = backend.client.get(meta_key(backend, task_id))
    return json.loads(raw) if raw else None


def request(name: str = "turbo.query", **extra) -> Context:
    return Context(task=name, args=[], kwargs={}, hostname="w@test", retries=0, **extra)


def test_states_are_stored_and_success_is_final(backend):
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED, request=request())
    assert stored(backend, task_id)["status"] == states.STARTED
    backend.store_result(task_id, {"rows": [[1]]}, states.SUCCESS, request=request())
    # a redelivered duplicate ending later must not overwrite the result
    backend.store_result(task_id, None, states.STARTED, request=request())
    backend.store_result(task_id, "boom", states.FAILURE, request=request())
    meta = stored(backend, task_id)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"rows": [[1]]}
    assert meta["task_id"] == task_id and meta["name"] == "turbo.query"
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS


def test_success_written_by_another_encoder_is_final_too(backend):
    """The guard does not depend on Celery's key order: other JSON is decoded."""
    task_id = str(uuid.uuid4())
    backend.client.set(meta_key(backend, task_id),
                       json.dumps({"result": 7, "task_id": task_id, "status": "SUCCESS"}))
    backend.store_result(task_id, "late", states.FAILURE, request=request())
    assert stored(backend, task_id)["result"] == 7
    # and a non-final state in any order is overwritten as before
    other = str(uuid.uuid4())
    backend.client.set(meta_key(backend, other), json.dumps({"result": None, "status": "STARTED"}))
    backend.store_result(other, 8, states.SUCCESS, request=request())
    assert stored(backend, other)["result"] == 8


def test_failure_keeps_its_own_expiry(backend):
    ok, failed = str(uuid.uuid4()), str(uuid.uuid4())
    backend.store_result(ok, 1, states.SUCCESS, request=request())
    backend.store_result(failed, "x", states.FAILURE, request=request())
    ttl_ok = backend.client.ttl(meta_key(backend, ok))
    ttl_failed = backend.client.ttl(meta_key(backend, failed))
    assert 0 < ttl_ok <= backend.expires
    assert 0 < ttl_failed <= backend.failure_expires


def test_every_state_is_published(backend):
    task_id = str(uuid.uuid4())
    pubsub = backend.client.pubsub()
    pubsub.subscribe(meta_key(backend, task_id))
    try:
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        backend.store_result(task_id, None, states.STARTED, request=request())
        backend.store_result(task_id, 5, states.SUCCESS, request=request())
        heard = []
        deadline = time.monotonic() + 5
        while len(heard) < 2 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                heard.append(json.loads(message["data"])["status"])
        assert heard == [states.STARTED, states.SUCCESS]
    finally:
        pubsub.close()


def test_recent_list_gets_tasks_not_steps_or_internals(backend):
    client = backend.client
    query, step, notice = (str(uuid.uuid4()) for _ in range(3))
    before = time.time()
    backend.store_result(query, None, states.STARTED, request=request("turbo.query"))
    backend.store_result(step, None, states.STARTED,
                         request=request("turbo.query", turbo_flow="f1", turbo_step="a"))
    backend.store_result(notice, None, states.STARTED, request=request("turbo.notify"))
    assert client.zscore(RECENT_KEY, f"task:{step}") is None
    assert client.zscore(RECENT_KEY, f"task:{notice}") is None
    first = client.zscore(RECENT_KEY, f"task:{query}")
    assert first is not None and first >= before - 1
    # the first state's time stays (NX): `turbo ls` orders by when a task showed up
    time.sleep(0.05)
    backend.store_result(query, 1, states.SUCCESS, request=request("turbo.query"))
    assert client.zscore(RECENT_KEY, f"task:{query}") == first


def test_recent_list_is_trimmed(backend):
    client = backend.client
    for _ in range(3):
        backend.store_result(str(uuid.uuid4()), None, states.STARTED, request=request())
    assert client.zcard(RECENT_KEY) <= RECENT_KEEP
    fillers = {f"task:filler-{i}": i for i in range(RECENT_KEEP + 5)}  # older than all
    client.zadd(RECENT_KEY, fillers)
    try:
        newest = str(uuid.uuid4())
        backend.store_result(newest, None, states.STARTED, request=request())
        assert client.zcard(RECENT_KEY) == RECENT_KEEP
        assert client.zscore(RECENT_KEY, f"task:{newest}") is not None
        assert client.zscore(RECENT_KEY, "task:filler-0") is None
    finally:
        client.zrem(RECENT_KEY, *fillers)


def test_the_client_keeps_one_connection_and_a_forked_child_builds_its_own(backend):
    """A prefork child must not write to the parent's socket: it stores through a
    client of its own, and the parent's client still works afterwards."""
    import os

    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.STARTED, request=request())
    parent_client = backend.client
    assert parent_client._single_connection_client
    parent_socket = parent_client.connection._sock
    pid = os.fork()
    if pid == 0:
        try:
            backend.store_result(task_id, {"rows": 1}, states.SUCCESS, request=request())
            own = backend.client is not parent_client and \
                backend.client.connection._sock is not parent_socket
            os._exit(0 if own else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.client is parent_client and parent_client.connection._sock is parent_socket
    assert stored(backend, task_id)["status"] == states.SUCCESS  # written by the child
    assert backend.client.ping()


def test_stored_args_are_redacted_like_the_argsrepr(backend):
    """result_extended stores a task's args with its result: a secret passed by
    mistake must not sit in the result backend (or Flower) for a day."""
    task_id = str(uuid.uuid4())
    secret_request = Context(task="turbo.query", args=["SELECT 1", "password=hunter2"],
                             kwargs={"api_key": "sk-live-123", "note": "token=abc123"},
                             hostname="w@test", retries=0)
    backend.store_result(task_id, {"rows": 1}, states.SUCCESS, request=secret_request)
    meta = stored(backend, task_id)
    assert meta["args"][0] == "SELECT 1" and "hunter2" not in json.dumps(meta["args"])
    assert meta["kwargs"]["api_key"] == "***" and "abc123" not in meta["kwargs"]["note"]
    assert secret_request.args[1] == "password=hunter2"  # the task's own copy is untouched
    assert "hunter2" not in json.dumps(backend.get_task_meta(task_id))
