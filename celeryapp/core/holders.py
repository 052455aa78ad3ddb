"""Who holds each unacked message, whether it is alive, and what happens when it is not.

kombu's Redis transport keeps a delivered, not yet acknowledged message in the
``unacked`` hash and brings it back after ``visibility_timeout`` (derived from the
longest hard time limit: 71 minutes by default). So a worker that dies as a whole
stalls its tasks that long, while a live worker's task that outlasts the timeout
(a long run, a countdown) is delivered a second time.

Here each worker process that takes messages is a *holder*: a heartbeat key in Redis
(``turbo:holder:<id>``, expiring after ``TURBO_DEAD_WORKER_TIMEOUT``, renewed every
quarter of it by a thread of its own, on a connection of its own with short socket
timeouts) and, beside each unacked record, the holder's id (``turbo:unacked_holders``,
written by the same Lua script as the record). The same thread:

* **recovers** the messages of holders whose heartbeat is gone - seen gone twice in a
  row, and only once this holder has itself been beating for a whole timeout (after a
  Redis outage every key looks expired: the others get a timeout to beat again) - back
  to the head of their queues, each in a transaction that checks the record still names
  the dead holder (two survivors never both restore one message);
* **settles** what this process gave up while Redis was away: acks it could not send
  (sent now, if the record still names this holder) and messages it will never finish
  (its consumer lost the connection: Celery cancels running tasks and drops reserved
  ones) - put back at the head of their queues;
* **fences** this process: a holder that could not beat for ``timeout - timeout / 4`` may
  already have been declared dead by the others, who then run its tasks. It does not run
  them a second time alongside: it kills its pool processes (agent CLIs die with them)
  and exits with code 75 (EX_TEMPFAIL) for its supervisor to restart it. A partition, or
  a Redis outage, shorter than that costs nothing; nor does a longer one to a worker
  that holds no message (it rejoins by itself).

The visibility timeout stays as a backstop for records without a holder, and never
restores a message whose holder is alive (:class:`.transport.QoS`).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

from .processes import children
from .text import as_text

HOLDERS_KEY = "turbo:unacked_holders"  # hash: delivery tag -> holder id
BEAT_KEY = "turbo:holder:{}"
DEFAULT_TIMEOUT_S = 15.0
LAPSE_EXIT_CODE = 75  # EX_TEMPFAIL: the supervisor restarts the worker
WARN_EVERY_S = 30.0  # "Redis is away" is logged once per this many seconds

log = logging.getLogger(__name__)


def beat_key(holder: str) -> str:
    return BEAT_KEY.format(holder)


def held_by_live(client, tag) -> bool:
    """True when a live holder has the message (its heartbeat key exists)."""
    holder = client.hget(HOLDERS_KEY, tag)
    return bool(holder) and bool(client.exists(beat_key(as_text(holder))))


def stop_this_worker(unbeaten_s: float) -> None:
    """The default fence: kill this process's children (pool processes; agent CLIs die
    with them), then exit at once - no ack, no result, no restore is sent."""
    log.critical("no heartbeat reached Redis for %.1f s: other workers may be taking over "
                 "this worker's tasks; stopping it (exit %d) so that none runs twice",
                 unbeaten_s, LAPSE_EXIT_CODE)
    for child in children(os.getpid()):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    logging.shutdown()
    os._exit(LAPSE_EXIT_CODE)


class Holder:
    """This process as a holder of unacked messages: its id, heartbeat, the recovery of
    dead holders' messages and the settling of its own. One per process (:func:`holder`)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S):
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.timeout = max(float(timeout), 2.0)
        self.pid = os.getpid()
        self.on_lapse: Callable[[float], None] | None = stop_this_worker
        # whether this process runs or has reserved any message (a worker cut off while
        # idle has nothing anyone could run twice: it carries on and rejoins)
        self.holds_work: Callable[[], bool] = lambda: True
        self._client = None
        self._restore: Callable | None = None
        self._forget: Callable | None = None
        self._thread: threading.Thread | None = None
        self._suspects: set[str] = set()
        self._lock = threading.Lock()
        self._orphans: set[str] = set()  # given up: back to the queue while still ours
        self._unsent: set[str] = set()  # acked, but the ack did not reach Redis
        self.last_beat: float | None = None  # monotonic time of the last beat Redis took
        self.healthy_since: float | None = None  # start of the current run of beats
        self._warned = 0.0

    @property
    def interval(self) -> float:
        return self.timeout / 4

    @property
    def lease(self) -> float:
        """How long this holder may go unbeaten before others may restore its messages
        (its key expires after ``timeout``; they need to see it gone twice)."""
        return self.timeout - self.interval

    def start(self, client_factory: Callable, restore: Callable, forget: Callable) -> None:
        """Beat once now (before the first record names this holder), then in a thread.
        ``restore(tag, holder, client)`` puts a message back on its queue if its record
        still names ``holder``; ``forget(tags, client)`` sends acks."""
        self._restore, self._forget = restore, forget
        if self._thread is not None and self._thread.is_alive():
            return
        self._client = client_factory()
        self.beat()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="turbo-holder-heartbeat")
        self._thread.start()

    def beat(self) -> None:
        self._client.set(beat_key(self.id), str(time.time()), px=int(self.timeout * 1000))
        now = time.monotonic()
        if self.last_beat is None or now - self.last_beat > self.interval * 1.5:
            self.healthy_since = now  # a beat was missed: the others may have missed theirs
        self.last_beat = now

    def give_up(self, tags) -> None:
        """Messages this process will not finish: put back by the heartbeat thread."""
        with self._lock:
            self._orphans.update(as_text(tag) for tag in tags)

    def unsent_acks(self, tags) -> None:
        """Acks that could not be sent: sent again by the heartbeat thread."""
        with self._lock:
            self._unsent.update(as_text(tag) for tag in tags)

    def _run(self) -> None:
        while True:
            # every interval, and at the end of the lease when beats fail (the fence
            # must come before the others may take over: see ``lease``)
            lapse_at = (self.last_beat or time.monotonic()) + self.lease
            time.sleep(max(0.05, min(self.interval, lapse_at - time.monotonic())))
            unbeaten = time.monotonic() - (self.last_beat or time.monotonic())
            if unbeaten >= self.lease and self.on_lapse is not None and self.holds_work():
                self.on_lapse(unbeaten)
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - Redis away: fenced at the lease's end
                self._warn("holder %s: heartbeat failed (%.1f s unbeaten; fenced after "
                           "%.1f s): %r", self.id, time.monotonic() - self.last_beat,
                           self.lease, exc)
                continue
            try:
                self.settle()
                self.recover()
            except Exception as exc:  # noqa: BLE001 - Redis went away again: next round
                self._warn("holder %s: settling or recovery failed: %r", self.id, exc)

    def _warn(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning(message, *args)

    def settle(self) -> int:
        """Send the acks that did not reach Redis, put back what this process gave up;
        how many messages were put back."""
        with self._lock:
            unsent, self._unsent = self._unsent, set()
            orphans, self._orphans = self._orphans, set()
        try:
            if unsent:
                self._forget(sorted(unsent), self._client)
            restored = 0
            for tag in sorted(orphans):
                restored += bool(self._restore(tag, self.id, self._client))
                orphans.discard(tag)
        except Exception:
            with self._lock:  # the rest is tried again next round
                self._orphans |= orphans
                if unsent:
                    self._unsent |= unsent
            raise
        if restored:
            log.warning("holder %s: %d message(s) it gave up during a connection loss are "
                        "back at the head of their queues", self.id, restored)
        return restored

    def recover(self) -> int:
        """Put back the messages of holders found dead twice in a row; how many."""
        client = self._client
        if self.healthy_since is None or time.monotonic() - self.healthy_since < self.timeout:
            self._suspects.clear()  # just started, or back from an outage: wait and see
            return 0
        held = client.hgetall(HOLDERS_KEY)
        if not held:
            self._suspects.clear()
            return 0
        by_holder: dict[str, list] = {}
        for tag, holder in held.items():
            by_holder.setdefault(as_text(holder), []).append(as_text(tag))
        others = [holder for holder in by_holder if holder != self.id]
        pipe = client.pipeline(transaction=False)
        for holder in others:
            pipe.exists(beat_key(holder))
        dead = {holder for holder, alive in zip(others, pipe.execute(), strict=True) if not alive}
        confirmed, self._suspects = dead & self._suspects, dead
        restored = 0
        for holder in confirmed:
            mine = sum(bool(self._restore(tag, holder, client)) for tag in by_holder[holder])
            restored += mine
            log.warning("worker %s stopped beating: %d of its unacked message(s) are back "
                        "at the head of their queues", holder, mine)
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
