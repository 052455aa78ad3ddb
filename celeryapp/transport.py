"""kombu's Redis transport, minus two per-message costs; the semantics are kombu's.

* One reusable redis-py client per channel. kombu builds a new ``redis.Redis``
  object for every publish that is not given a client (``conn_or_acquire``):
  with redis-py 8 that costs ~100 µs, as much as the LPUSH itself. A client over
  the channel's connection pool is thread-safe and fork-safe (the pool resets
  itself in a child), so keep one and rebuild it only when the pool changes.
* The unacked bookkeeping of each message - recorded when it is delivered,
  removed when it is acked - is one Lua script each instead of a MULTI/EXEC
  transaction of four commands: the same keys, values and atomicity, a third of
  the worker main process's CPU per task before. (With a ``global_keyprefix``,
  which kombu's client applies to one EVALSHA key only, kombu's own code runs.)

Visibility timeout, restoring unacked messages, priorities and fanout are kombu's.
"""
from __future__ import annotations

from contextlib import contextmanager
from time import time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

# KEYS: unacked index (sorted set by delivery time), unacked (hash of tag -> message)
RECORD_UNACKED = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
FORGET_UNACKED = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class QoS(kombu_redis.QoS):
    def _script(self, lua: str, *args) -> None:
        self.channel.run_script(lua, [self.unacked_index_key, self.unacked_key], args)

    def append(self, message, delivery_tag):
        if self.channel.global_keyprefix:
            return super().append(message, delivery_tag)
        delivery = message.delivery_info
        self._script(RECORD_UNACKED, time(), delivery_tag,
                     dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag):
        if self.channel.global_keyprefix:
            return super().ack(delivery_tag)
        self._script(FORGET_UNACKED, delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if requeue or self.channel.global_keyprefix:
            return super().reject(delivery_tag, requeue=requeue)
        self._script(FORGET_UNACKED, delivery_tag)
        virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None
    _scripts_client = None
    _scripts: dict | None = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def run_script(self, lua: str, keys: list, args) -> None:
        """EVALSHA on the shared client; redis-py loads the script when Redis lacks it."""
        with self.conn_or_acquire() as client:
            if self._scripts_client is not client:  # a new client (new pool): afresh
                self._scripts, self._scripts_client = {}, client
            script = self._scripts.get(lua)
            if script is None:
                script = self._scripts[lua] = client.register_script(lua)
            script(keys=keys, args=args)


class Transport(kombu_redis.Transport):
    Channel = Channel
