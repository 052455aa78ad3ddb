"""The worker's consumer, sending task events in batches (``worker_consumer``).

Celery already buffers task events (task-received/started/succeeded) into
``task.multi`` messages, but flushes the buffer on the very next turn of the
event loop, so under load it still PUBLISHes about one message per event:
three per task, a third of the worker's main process in the no-op benchmark.
Here the flush waits ``TURBO_EVENT_FLUSH_DELAY`` (0.1 s; or until Celery's
buffer limit of 24 events is reached), so a busy worker sends one message per
~24 events and an idle one still reports a task within a fraction of a second.
Flower and ``celery events`` read ``task.multi`` messages like single events.
What is buffered when the worker shuts down is sent before it goes.
"""
from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

DEFAULT_FLUSH_DELAY = 0.1  # seconds an event may wait for others to share its message


class Consumer(CeleryConsumer):
    _event_flush_timer = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._event_flush_delay = self.app.conf.get("turbo_event_flush_delay",
                                                    DEFAULT_FLUSH_DELAY)

    def on_send_event_buffered(self):
        delay = self._event_flush_delay
        if self.hub is None or not delay:
            return super().on_send_event_buffered()
        if self._event_flush_timer is None:
            self._event_flush_timer = self.hub.call_later(delay, self._flush_buffered_events)

    def _flush_buffered_events(self):
        self._event_flush_timer = None
        self._flush_events()

    def shutdown(self):
        try:  # what is buffered goes out before the event connection closes
            self._flush_events()
        except Exception:  # noqa: BLE001  (a lost connection: Celery buffers, as it would)
            pass
        super().shutdown()
