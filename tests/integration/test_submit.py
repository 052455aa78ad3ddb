"""Batched submission (celeryapp/submit.py): held back until the block ends, then all there."""
from __future__ import annotations

import pytest
from celery import chord, group

from celeryapp.core.names import host_queue
from celeryapp.submit import apply_group, batch


def queued(client, queue: str) -> int:
    """Messages waiting in a queue, over its priority sub-queues."""
    return sum(client.llen(key) for key in client.scan_iter(match=f"{queue}*"))


@pytest.fixture
def nobody_host(scratch_name):
    """A host whose queue no worker consumes, emptied afterwards."""
    return scratch_name


def test_batch_publishes_when_the_block_ends(celery_app, broker_client, nobody_host):
    from tasks.query import run_query

    queue = host_queue(nobody_host)
    with batch(celery_app) as producer:
        ids = [run_query.apply_async(("SELECT 1",), queue=host_queue(nobody_host),
                                     producer=producer).id
               for _ in range(5)]
        assert queued(broker_client, queue) == 0  # nothing sent yet: one pipeline at the end
    assert queued(broker_client, queue) == 5
    assert len(set(ids)) == 5


def test_batch_sends_nothing_when_the_block_raises(celery_app, broker_client, nobody_host):
    from tasks.query import run_query

    with pytest.raises(RuntimeError, match="changed my mind"):
        with batch(celery_app) as producer:
            run_query.apply_async(("SELECT 1",), queue=host_queue(nobody_host), producer=producer)
            raise RuntimeError("changed my mind")
    assert queued(broker_client, host_queue(nobody_host)) == 0


def test_apply_group_runs_every_task(celery_app, shared_worker):
    from tasks.query import run_query

    result = apply_group(group(run_query.s(f"SELECT {i} AS n") for i in range(20)))
    answers = result.get(timeout=120)
    assert [a["rows"] for a in answers] == [[[i]] for i in range(20)]


def test_apply_group_takes_a_chord(celery_app, shared_worker):
    from tasks.query import run_query

    header = group(run_query.s(f"SELECT {i} AS n") for i in range(5))
    body = run_query.si("SELECT 'joined' AS state")
    result = apply_group(chord(header, body))
    assert result.get(timeout=120)["rows"] == [["joined"]]


def subscribed(celery_app, results) -> set[str]:
    consumer = celery_app.backend.result_consumer
    keys = {celery_app.backend.get_key_for_task(r.id) for r in results}
    return keys & set(consumer.subscribed_to) if consumer._pubsub is not None else set()


@pytest.mark.parametrize("submit", ["apply_group", "group.apply_async"])
def test_a_group_subscribes_to_its_results_only_when_someone_waits(celery_app, shared_worker,
                                                                   submit):
    """Celery's group subscribes to every task's result channel at submit (its
    ready-barrier); fire-and-forget groups never read them. get() subscribes."""
    from tasks.query import run_query

    signature = group(run_query.s(f"SELECT {i} AS n") for i in range(12))
    result = apply_group(signature) if submit == "apply_group" else signature.apply_async()
    assert subscribed(celery_app, result.results) == set()
    answers = result.get(timeout=120)
    assert [a["rows"] for a in answers] == [[[i]] for i in range(12)]


def test_a_group_whose_results_landed_before_get_is_still_collected(celery_app, shared_worker):
    """Results stored before get() subscribed come from the one read at the start
    of the wait, not from the (missed) publishes."""
    import time

    from tasks.query import run_query

    result = apply_group(group(run_query.s(f"SELECT {i} AS n") for i in range(8)))
    deadline = time.monotonic() + 120
    while not all(r.state == "SUCCESS" for r in result.results):
        assert time.monotonic() < deadline, "the group did not finish"
        time.sleep(0.05)
    for r in result.results:  # forget what the state checks cached
        r._cache = None
    started = time.monotonic()
    answers = result.get(timeout=60)
    assert [a["rows"] for a in answers] == [[[i]] for i in range(8)]
    assert time.monotonic() - started < 30  # collected, not waited out
