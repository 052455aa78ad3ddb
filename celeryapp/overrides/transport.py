"""kombu's Redis transport, minus per-message round trips; the semantics are kombu's.

* One reusable redis-py client per channel. kombu builds a new ``redis.Redis``
  object for every publish that is not given a client (``conn_or_acquire``):
  with redis-py 8 that costs ~100 µs, as much as the LPUSH itself. The client
  keeps one connection of the channel's pool (no checkout per command, ~50 µs of a
  ``delay()``); redis-py locks it across threads, and it is rebuilt when the pool
  changes or the process forked.
* Messages are fetched in batches: ``BLMPOP ... COUNT n`` (Redis >= 7) takes as
  many as the prefetch window allows in one round trip where kombu's ``BRPOP``
  takes one, from the same keys in the same order (priorities, round robin).
* The unacked bookkeeping - recorded when a message is delivered, removed when it
  is acked - is one Lua script per batch (``record_unacked.lua``,
  ``forget_unacked.lua``) instead of a MULTI/EXEC transaction of four commands per
  message: the same keys, values and atomicity. A batch is
  recorded before any of its messages is delivered, so an ack can never precede
  its record. Acks made in the event loop's thread are sent together at the loop's
  next tick (before it polls again); acks from other threads, and every ack when
  there is no event loop, are sent at once. A worker killed with acks still
  pending sees those tasks again after the visibility timeout, as it would if it
  died just before acking them: at-least-once, as before.

With a ``global_keyprefix`` (kombu's client applies it to one EVALSHA key only),
kombu's own code runs; on a Redis that refuses BLMPOP (older than 7.0, or an ACL
without it), kombu's one-message BRPOP fetch. Visibility timeout, restoring
unacked messages, priorities and fanout are kombu's.
"""
from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager
from functools import cached_property
from queue import Empty
from time import monotonic, time

from kombu.log import get_logger
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from celeryapp.core import holders, lua
from celeryapp.core.names import REQUEUES_HEADER

# the unacked bookkeeping's scripts (KEYS, ARGV and replies: in their headers)
RECORD_UNACKED = "record_unacked.lua"  # a fetched batch, with its holder
FORGET_UNACKED = "forget_unacked.lua"  # acks, where this holder still holds the message
logger = get_logger(__name__)
FETCH_CAP = 64  # messages per fetch when the consumer sets no prefetch limit
LUA_UNPACK_CAP = 4096  # unpack() has a stack limit: larger ack batches are split


def _refused_command(exc: Exception) -> bool:
    """Redis < 7 does not know BLMPOP; an ACL may not allow it."""
    text = str(exc).lower()
    return "unknown command" in text or "noperm" in text or "no permissions" in text


def unacked_record(raw: str, payload: dict) -> str:
    """kombu's unacked value, ``dumps([payload, exchange, routing_key])``, without
    serialising the payload again: ``raw`` is its JSON as it came from the queue."""
    info = payload["properties"]["delivery_info"]
    return f"[{raw}, {dumps(info['exchange'])}, {dumps(info['routing_key'])}]"


def _running_tags() -> set:
    """Delivery tags of the tasks this worker process is running now (none outside a
    worker). After a connection loss they run on (``worker_cancel_long_running_tasks_on_
    connection_loss`` is off with this transport): their messages stay recorded under
    this holder, acked when they end or put back by the others if this worker dies."""
    from celery.worker import state

    return {request.message.delivery_tag for request in tuple(state.active_requests)
            if request.message is not None}


_LIVE_QOS: weakref.WeakSet[QoS] = weakref.WeakSet()  # this process's consuming channels


def _holds_work() -> bool:
    """Whether this process runs a task or holds a delivered, unacked message."""
    # kombu drops acked tags from ``_delivered`` lazily: those in ``_dirty`` are acked
    return bool(_running_tags()) or any(len(qos._delivered) > len(qos._dirty)
                                        for qos in list(_LIVE_QOS) if not qos.channel.closed)


class QoS(kombu_redis.QoS):
    _visibility_sweep = False  # restore_visible is running (this thread or another)
    _started_holder: holders.Holder | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recorded: set = set()  # delivered in a batch whose record is written
        self._pending_acks: list = []  # acked in the loop's thread, not yet sent

    def _script(self, name: str, *args, client=None) -> None:
        self.channel.run_script(name, [self.unacked_index_key, self.unacked_key,
                                       holders.HOLDERS_KEY], args, client=client)

    def _holder(self) -> holders.Holder:
        """This process as the holder of what it records; its heartbeat started first
        (once per channel and process: every fetched batch asks)."""
        holder = self._started_holder
        if holder is not None and holder.pid == os.getpid():
            return holder
        options = self.channel.connection.client.transport_options or {}
        holder = holders.holder(options.get("dead_worker_timeout",
                                            holders.DEFAULT_TIMEOUT_S))
        _LIVE_QOS.add(self)
        holder.holds_work = _holds_work
        holder.start(lambda: self._holder_client(holder.interval / 2), self.restore_held,
                     lambda tags, client: self._script(FORGET_UNACKED, holder.id, *tags,
                                                       client=client))
        self._started_holder = holder
        return holder

    def _holder_client(self, timeout: float):
        """The heartbeat's own connection: short socket timeouts, so that a cut-off
        network fails a beat within ``timeout`` instead of hanging it (the fence)."""
        pool = self.channel.pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": timeout,
                  "socket_connect_timeout": timeout}
        own = type(pool)(connection_class=pool.connection_class, max_connections=2, **kwargs)
        return self.channel.Client(connection_pool=own)

    def record_batch(self, entries: list[tuple[str, str]]) -> None:
        """Record ``(tag, record)`` pairs as unacked, one round trip for all; their
        ``append`` then writes nothing more."""
        self._write_records(entries)
        self._recorded.update(tag for tag, _ in entries)

    def _write_records(self, entries: list[tuple[str, str]]) -> None:
        args: list = [time(), self._holder().id]
        for tag, record in entries:
            args += (tag, record)
        self._script(RECORD_UNACKED, *args)

    def append(self, message, delivery_tag):
        if self.channel.global_keyprefix:
            return super().append(message, delivery_tag)
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
        else:  # delivered one by one (kombu's BRPOP path, basic_get)
            delivery = message.delivery_info
            self._write_records([(delivery_tag, dumps(
                [message._raw, delivery["exchange"], delivery["routing_key"]]))])
        virtual.QoS.append(self, message, delivery_tag)

    def _forget(self, delivery_tag) -> None:
        if self.channel.closed or self.channel.connection is None:
            # closed after a connection loss, it still gets the acks of the tasks that
            # were running: the heartbeat thread sends them (this channel cannot)
            self._holder().unsent_acks([delivery_tag])
            return
        if self.channel.defers_acks():
            self._pending_acks.append(delivery_tag)
            return
        try:
            self._script(FORGET_UNACKED, self._holder().id, delivery_tag)
        except self.channel.connection_errors:
            self._holder().unsent_acks([delivery_tag])  # sent by the heartbeat thread
            raise

    def flush_acks(self) -> None:
        """Send the acks gathered during this turn of the event loop."""
        while self._pending_acks:
            tags = self._pending_acks[:LUA_UNPACK_CAP]
            self._script(FORGET_UNACKED, self._holder().id, *tags)
            del self._pending_acks[:len(tags)]

    def hand_pending_acks_to_holder(self) -> int:
        """Acks that could not be sent: the heartbeat thread sends them once Redis is
        back (so their records do not stay behind under a live holder)."""
        tags, self._pending_acks = self._pending_acks, []
        if tags:
            self._holder().unsent_acks(tags)
        return len(tags)

    def ack(self, delivery_tag):
        if self.channel.global_keyprefix:
            return super().ack(delivery_tag)
        self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if requeue and not self.channel.global_keyprefix:
            # kombu puts a rejected message at the back of its queue (LPUSH); a task
            # whose process died has waited its turn already: back at the head, with
            # the requeue counted for the poison bound (overrides/request.py)
            try:
                self.restore_held(delivery_tag, self._holder().id, requeued=True)
            except self.channel.connection_errors:
                self._holder().give_up([delivery_tag])  # put back once Redis is back
            virtual.QoS.ack(self, delivery_tag)
            return
        if requeue or self.channel.global_keyprefix:
            return super().reject(delivery_tag, requeue=requeue)
        self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, start=0, num=10, interval=10):
        """kombu's visibility-timeout sweep, which now passes over every message whose
        holder is alive (a long task, a countdown, a worker with other time limits)."""
        self._visibility_sweep = True
        try:
            return super().restore_visible(start, num, interval)
        finally:
            self._visibility_sweep = False

    def restore_by_tag(self, tag, client=None, leftmost=False):
        """kombu's; the visibility sweep passes over messages whose holder is alive."""
        if self._visibility_sweep:
            with self.channel.conn_or_acquire(client) as conn:
                if holders.held_by_live(conn, tag):
                    return None
        return super().restore_by_tag(tag, client, leftmost)

    def restore_held(self, tag, holder: str, client=None, requeued: bool = False) -> bool:
        """Put a message back at the head of its queue if its record still names
        ``holder`` (a dead holder's, or this one's own); with ``requeued`` its
        ``turbo_requeues`` header is counted up. One WATCH/MULTI transaction: a message
        that another survivor restored, or another worker holds by now, is left alone.
        True when it was put back."""
        tag = bytes_to_str(tag)

        def restore(pipe):
            current = pipe.hget(holders.HOLDERS_KEY, tag)
            if current is None or bytes_to_str(current) != holder:
                return False
            stored = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            pipe.hdel(holders.HOLDERS_KEY, tag)
            if stored:
                payload, exchange, routing_key = loads(bytes_to_str(stored))
                if requeued:
                    headers = payload.setdefault("headers", {})
                    headers[REQUEUES_HEADER] = int(headers.get(REQUEUES_HEADER) or 0) + 1
                self.channel._do_restore_message(payload, exchange, routing_key, pipe, False)
            return bool(stored)

        with self.channel.conn_or_acquire(client) as conn:
            return conn.transaction(restore, self.unacked_key, holders.HOLDERS_KEY,
                                    value_from_callable=True)

    def restore_unacked(self, client=None):
        """At channel close (warm shutdown, or a connection loss: Celery cancels what was
        running and drops what was reserved): everything delivered and not acked goes
        back to its queue now - or, with Redis away, through the heartbeat thread once
        it is back - and the acks not yet sent go with it."""
        if self.channel.global_keyprefix:
            return super().restore_unacked(client)
        holder = self._holder()
        try:
            self.flush_acks()
        except self.channel.connection_errors:
            self.hand_pending_acks_to_holder()
        running = _running_tags()  # still running here: they ack when they end
        tags = [tag for tag in self._delivered if tag not in running]
        self._delivered.clear()
        for i, tag in enumerate(tags):
            try:
                self.restore_held(tag, holder.id, client)
            except self.channel.connection_errors:
                holder.give_up(tags[i:])
                break


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None
    _shared_pid: int | None = None  # the process that built _shared_client
    _scripts_client = None
    _scripts: dict | None = None
    _batch_fetch: bool | None = None  # BLMPOP usable? decided at the first fetch

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool \
                or self._shared_pid != os.getpid():
            shared = self._shared_client = self._create_shared_client()
            self._shared_pid = os.getpid()
        yield shared

    def _create_shared_client(self):
        """A client that keeps one connection of the channel's pool: no pool checkout
        (a lock and a readability poll) per command. redis-py serialises its use
        across threads with a lock; a forked child builds its own (pid check above)."""
        kwargs = {"connection_pool": self.pool, "single_connection_client": True}
        credential_provider = self.pool.connection_kwargs.get("credential_provider")
        if credential_provider is not None:
            kwargs["credential_provider"] = credential_provider
        return self.Client(**kwargs)

    def run_script(self, name: str, keys: list, args, client=None) -> None:
        """EVALSHA of the script file ``name`` (package data, read once) on the shared
        client (or ``client``); redis-py loads the script when Redis lacks it."""
        if client is not None:
            client.register_script(lua.source(__package__, name))(keys=keys, args=args)
            return
        with self.conn_or_acquire() as client:
            if self._scripts_client is not client:  # a new client (new pool): afresh
                self._scripts, self._scripts_client = {}, client
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(
                    lua.source(__package__, name))
            script(keys=keys, args=args)

    def defers_acks(self) -> bool:
        return self.connection.loop_thread == threading.get_ident()

    def _uses_batch_fetch(self) -> bool:
        # BLMPOP until Redis refuses it (older than 7.0, or an ACL without it); no INFO
        # call to find out, since production ACLs deny INFO (@dangerous)
        if self._batch_fetch is None:
            self._batch_fetch = not self.global_keyprefix
        return self._batch_fetch

    def _fetch_count(self) -> int:
        room = self.qos.can_consume_max_estimate()
        return FETCH_CAP if room is None else max(1, min(room, FETCH_CAP))

    def _brpop_start(self, timeout=None):
        if not self._uses_batch_fetch():
            return super()._brpop_start(timeout)
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps
                for queue in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command("BLMPOP", timeout or 0, len(keys), *keys,
                                            "RIGHT", "COUNT", self._fetch_count())

    def _brpop_read(self, **options):
        if not self._uses_batch_fetch():
            return super()._brpop_read(**options)
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BLMPOP",
                                                   **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                raise
            except self.ResponseError as exc:
                if not _refused_command(exc):
                    raise
                logger.warning("Redis refused BLMPOP (%s): fetching one message at a "
                               "time with BRPOP", exc)
                self._batch_fetch = False
                raise Empty() from None
            if not reply:
                raise Empty()
            key, items = reply
            dest = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._deliver_batch([bytes_to_str(item) for item in items], dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
            if not self.global_keyprefix:
                self.qos._holder()  # beating, and watching the others, from now on
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag):
        self._no_ack_queues.discard(self._tag_to_queue.get(consumer_tag))
        return super().basic_cancel(consumer_tag)

    @cached_property
    def _no_ack_queues(self) -> set:
        """Queues consumed without acks (Celery's control replies): nothing to record."""
        return set()

    def _deliver_batch(self, raws: list[str], dest: str) -> None:
        """Record the batch as unacked, then deliver each message; one message whose
        consumer raises does not keep the rest of the batch from being delivered."""
        payloads = [loads(raw) for raw in raws]
        if dest not in self._no_ack_queues:
            self.qos.record_batch([(payload["properties"]["delivery_tag"],
                                    unacked_record(raw, payload))
                                   for raw, payload in zip(raws, payloads, strict=True)])
        failure = None
        for payload in payloads:
            try:
                self.connection._deliver(payload, dest)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                failure = failure or exc
        if failure is not None:
            raise failure

    def close(self):
        if not self.closed and not self.global_keyprefix and self._qos is not None:
            try:
                self._qos.flush_acks()
            except self.connection_errors:
                self._qos.hand_pending_acks_to_holder()  # sent once Redis is back
        super().close()
        shared, self._shared_client = self._shared_client, None
        if shared is not None and self._shared_pid == os.getpid():
            shared.close()  # its connection back to the pool (already disconnected)


class Transport(kombu_redis.Transport):
    Channel = Channel
    loop_thread: int | None = None  # the thread of the event loop we are registered with

    def register_with_event_loop(self, connection, loop):
        super().register_with_event_loop(connection, loop)
        self.loop_thread = threading.get_ident()
        loop.on_tick.add(self._flush_acks)

    def _flush_acks(self) -> None:
        """The loop's tick: send each channel's pending acks. Acks that cannot be sent
        (Redis away) are handed to the worker's holder, whose heartbeat thread sends them
        once Redis is back: their messages stay recorded under a live holder meanwhile,
        so nobody takes them back and they are not run again."""
        for channel in self.channels:
            qos = channel._qos
            if qos is None or not qos._pending_acks:
                continue
            try:
                qos.flush_acks()
            except (*channel.connection_errors, channel.ResponseError) as exc:
                logger.warning("could not send %d ack(s) (%r); the heartbeat thread sends "
                               "them once Redis is back", qos.hand_pending_acks_to_holder(),
                               exc)
