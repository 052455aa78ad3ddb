"""Batched submission (celeryapp/submit.py): held back until the block ends, then all there."""
from __future__ import annotations

import pytest
from celery import chord, group

from celeryapp.constants import host_queue
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
        ids = [run_query.apply_async(("SELECT 1",), queue=host_queue(nobody_host), producer=producer).id
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
