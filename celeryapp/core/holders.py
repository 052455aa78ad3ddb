"""Who holds each unacked message, whether it is alive, and what happens when it is not.

kombu's Redis transport keeps a delivered, not yet acknowledged message in the
``unacked`` hash and brings it back after ``visibility_timeout`` (derived from the
longest hard time limit: 71 minutes by default). So a worker that dies as a whole
stalls its tasks that long, while a live worker's task that outlasts the timeout
(a long run, a countdown) is delivered a second time.

Here each worker process that takes messages is a *holder*: a heartbeat key in Redis
(``turbo:holder:<id>``, expiring after ``TURBO_DEAD_WORKER_TIMEOUT``, renewed every
quarter of it by a thread of its own) and, beside each unacked record, the holder's id
(``turbo:unacked_holders``, written by the same Lua script as the record). The same
thread looks at the other holders every quarter timeout: the messages of a holder
whose heartbeat is gone - seen gone twice in a row, so that a holder that merely lost
Redis for a moment can beat again - go back to the head of their queues (kombu's
``restore_by_tag``, a WATCH/MULTI transaction: two survivors cannot both restore one
message). The visibility timeout stays as a backstop for records without a holder,
and never restores a message whose holder is alive (:class:`.transport.QoS`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

HOLDERS_KEY = "turbo:unacked_holders"  # hash: delivery tag -> holder id
BEAT_KEY = "turbo:holder:{}"
DEFAULT_TIMEOUT_S = 15.0

log = logging.getLogger(__name__)


def beat_key(holder: str) -> str:
    return BEAT_KEY.format(holder)


def held_by_live(client, tag) -> bool:
    """True when a live holder has the message (its heartbeat key exists)."""
    holder = client.hget(HOLDERS_KEY, tag)
    return bool(holder) and bool(client.exists(beat_key(holder.decode()
                                                        if isinstance(holder, bytes)
                                                        else holder)))


class Holder:
    """This process as a holder of unacked messages: its id, heartbeat and the
    recovery of dead holders' messages. One per process (see :func:`holder`)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S):
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.timeout = max(float(timeout), 2.0)
        self.pid = os.getpid()
        self._client = None
        self._restore: Callable | None = None
        self._thread: threading.Thread | None = None
        self._suspects: set[str] = set()

    @property
    def interval(self) -> float:
        return self.timeout / 4

    def start(self, client_factory: Callable, restore: Callable) -> None:
        """Beat once now (before the first record names this holder), then in a thread.
        ``restore(tag, client)`` puts a dead holder's message back on its queue."""
        self._restore = restore
        if self._thread is not None and self._thread.is_alive():
            return
        self._client = client_factory()
        self.beat()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="turbo-holder-heartbeat")
        self._thread.start()

    def beat(self) -> None:
        self._client.set(beat_key(self.id), str(time.time()), px=int(self.timeout * 1000))

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.beat()
                self.recover()
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next round
                log.warning("holder heartbeat/recovery failed: %r", exc)

    def recover(self) -> int:
        """Put back the messages of holders found dead twice in a row; how many."""
        client = self._client
        held = client.hgetall(HOLDERS_KEY)
        if not held:
            self._suspects.clear()
            return 0
        by_holder: dict[str, list] = {}
        for tag, holder in held.items():
            by_holder.setdefault(holder.decode() if isinstance(holder, bytes) else holder,
                                 []).append(tag)
        others = [holder for holder in by_holder if holder != self.id]
        pipe = client.pipeline(transaction=False)
        for holder in others:
            pipe.exists(beat_key(holder))
        dead = {holder for holder, alive in zip(others, pipe.execute()) if not alive}
        confirmed, self._suspects = dead & self._suspects, dead
        restored = 0
        for holder in confirmed:
            for tag in by_holder[holder]:
                tag = tag.decode() if isinstance(tag, bytes) else tag
                self._restore(tag, client)
                client.hdel(HOLDERS_KEY, tag)
                restored += 1
            log.warning("worker %s stopped beating: its %d unacked message(s) are back at "
                        "the head of their queues", holder, len(by_holder[holder]))
        return restored


_HOLDER: Holder | None = None
_LOCK = threading.Lock()


def holder(timeout: float = DEFAULT_TIMEOUT_S) -> Holder:
    """This process's holder (a forked child gets its own)."""
    global _HOLDER
    with _LOCK:
        if _HOLDER is None or _HOLDER.pid != os.getpid():
            _HOLDER = Holder(timeout)
        return _HOLDER
