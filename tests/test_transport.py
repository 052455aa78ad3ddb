"""The project's kombu transport (celeryapp/transport.py) on the test Redis.

Its unacked bookkeeping is Lua instead of kombu's MULTI/EXEC: the records must be
the ones kombu writes, so that kombu's own restore (visibility timeout, a worker
that died) brings a message back, and acks/rejects must remove them.
"""
from __future__ import annotations

import json
import os

import pytest
from kombu import Connection

TRANSPORT = "celeryapp.transport:Transport"


@pytest.fixture
def queue_name(scratch_name):
    return scratch_name


def connection(**options) -> Connection:
    return Connection(os.environ["TURBO_BROKER_URL"], transport=TRANSPORT,
                      transport_options=options)


def unacked(client, prefix: str = "") -> tuple[dict, list]:
    return (client.hgetall(f"{prefix}unacked"),
            [tag.decode() for tag in client.zrange(f"{prefix}unacked_index", 0, -1)])


def test_delivered_message_is_recorded_as_kombu_does_and_ack_removes_it(broker_client,
                                                                       queue_name):
    with connection() as conn:
        queue = conn.SimpleQueue(queue_name)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        tag = message.delivery_tag
        records, index = unacked(broker_client)
        assert tag in index
        assert type(conn.default_channel.qos).__module__ == "celeryapp.transport"
        raw, exchange, routing_key = json.loads(records[tag.encode()])  # kombu's layout
        assert routing_key == queue_name and raw["properties"]["delivery_tag"] == tag
        message.ack()
        records, index = unacked(broker_client)
        assert tag not in index and tag.encode() not in records
        queue.close()


def test_kombu_restores_a_recorded_message(broker_client, queue_name):
    """What a dead worker leaves behind comes back through kombu's own restore."""
    with connection() as conn:
        queue = conn.SimpleQueue(queue_name)
        queue.put({"n": 2})
        message = queue.get(timeout=5)
        tag = message.delivery_tag
        conn.default_channel.qos.restore_by_tag(tag)  # what restore_visible does per tag
        assert tag not in unacked(broker_client)[1]
        again = queue.get(timeout=5)
        assert again.payload == {"n": 2}
        again.ack()
        queue.close()


def test_reject_removes_the_record_and_requeue_puts_it_back(broker_client, queue_name):
    with connection() as conn:
        queue = conn.SimpleQueue(queue_name)
        queue.put({"n": 3})
        queue.put({"n": 4})
        first = queue.get(timeout=5)
        first.reject()  # dropped
        assert first.delivery_tag not in unacked(broker_client)[1]
        second = queue.get(timeout=5)
        second.requeue()  # back in the queue, not lost
        assert second.delivery_tag not in unacked(broker_client)[1]
        assert queue.get(timeout=5).payload == {"n": 4}
        queue.close()


def test_global_keyprefix_keeps_kombus_own_path(broker_client, queue_name):
    with connection(global_keyprefix="pfx:") as conn:
        queue = conn.SimpleQueue(queue_name)
        queue.put({"n": 5})
        message = queue.get(timeout=5)
        assert message.delivery_tag in unacked(broker_client, "pfx:")[1]
        message.ack()
        assert message.delivery_tag not in unacked(broker_client, "pfx:")[1]
        queue.close()
