"""The Celery hooks that mask secrets where Flower and ``inspect`` get task data from.

The masking itself (what counts as a secret) is :mod:`celeryapp.core.redaction`.

The hooks that apply it where Flower gets its data:

* :class:`RedactingAMQP` computes a message's ``argsrepr``/``kwargsrepr`` from the
  redacted arguments (``Celery(amqp=...)``): the ``task-sent`` and ``task-received``
  events and ``inspect active`` as Flower asks it (``safe=True``) show those; the
  raw arguments travel unchanged in the message body;
* :class:`RedactingEvents` (``Celery(events=...)``) gives the app an event dispatcher that
  redacts the ``args``, ``kwargs``, ``result``, ``exception`` and ``traceback`` fields of every
  task event (the result repr of ``task-succeeded`` is built in the worker from the
  raw return value, so this is the one place to catch it);
* :class:`RedactingRequest` (``Task.Request``; :class:`RedactingTask` for
  ``Celery(task_cls=...)``) masks the arguments in the workers' inspect replies:
  ``reserved``/``scheduled``/``query_task`` (Flower's worker page) send the raw
  arguments from the message body, not the reprs;
* :func:`format_flower_task` is Flower's ``format_task`` option (set by
  ``celeryapp/monitoring/flowerconfig.py``): task pages show redacted text even for state
  loaded from an older persistent database.
"""
from __future__ import annotations

from celery.app.amqp import AMQP
from celery.app.events import Events
from celery.app.task import Task
from celery.events.dispatcher import EventDispatcher
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from celeryapp.core.redaction import (
    TEXT_LIMIT,
    redact,
    redact_event_fields,
    redact_text,
)


class RedactingAMQP(AMQP):
    """Messages whose ``argsrepr``/``kwargsrepr`` headers (and task-sent event) are redacted.

    The body keeps the real arguments; only their printed forms change. A caller's
    own ``argsrepr=`` is redacted as text.
    """

    def as_task_v2(self, task_id, name, args=None, kwargs=None, *rest,
                   argsrepr=None, kwargsrepr=None, **options):
        maxlevels = self.app.conf.task_repr_maxlevels
        # the reprs are cut at *_maxsize: redacting more of a long string is wasted work
        if argsrepr is None:
            argsrepr = saferepr(redact(tuple(args or ()), self.argsrepr_maxsize + 64),
                                self.argsrepr_maxsize, maxlevels=maxlevels)
        if kwargsrepr is None:
            kwargsrepr = saferepr(redact(dict(kwargs or {}), self.kwargsrepr_maxsize + 64),
                                  self.kwargsrepr_maxsize, maxlevels=maxlevels)
        return super().as_task_v2(task_id, name, args, kwargs, *rest,
                                  argsrepr=redact_text(argsrepr, TEXT_LIMIT),
                                  kwargsrepr=redact_text(kwargsrepr, TEXT_LIMIT), **options)


    def _create_task_sender(self):
        """Celery's sender, minus kombu's declare wrapper for a queue already declared.

        Celery passes ``declare=[queue]`` with every message; kombu caches the
        declaration per connection, but only after binding copies of the queue and
        building a retry wrapper, ~12 % of a ``delay()``. Skipping the call when the
        connection's cache already has the queue changes nothing else.
        """
        send = super()._create_task_sender()

        def send_task_message(producer, name, message, *args, queue=None, declare=None,
                              **kwargs):
            if declare is None and queue is not None and _declared(producer, queue):
                declare = ()
            return send(producer, name, message, *args, queue=queue, declare=declare,
                        **kwargs)

        return send_task_message


def _declared(producer, queue) -> bool:
    connection = getattr(producer, "connection", None)
    declared = getattr(connection, "declared_entities", None)
    return bool(declared) and hash(queue) in declared


class RedactingDispatcher(EventDispatcher):
    """Every event this process sends has its task texts redacted (args ... traceback)."""

    def send(self, type, blind=False, utcoffset=None, retry=False, retry_policy=None,
             Event=None, **fields):
        extra = {}
        if utcoffset is not None:
            extra["utcoffset"] = utcoffset
        if Event is not None:
            extra["Event"] = Event
        return super().send(type, blind=blind, retry=retry, retry_policy=retry_policy,
                            **extra, **redact_event_fields(fields))

    def publish(self, type, fields, producer, blind=False, Event=None, **kwargs):
        if Event is not None:
            kwargs["Event"] = Event
        return super().publish(type, redact_event_fields(fields), producer, blind=blind,
                               **kwargs)


class RedactingEvents(Events):
    """``app.events`` whose Dispatcher is :class:`RedactingDispatcher`."""

    dispatcher_cls = "celeryapp.overrides.redaction:RedactingDispatcher"


class RedactingRequest(Request):
    """A worker's request whose ``info()`` - what ``inspect active/reserved/scheduled/
    query_task`` reply, and so Flower's worker page - shows redacted arguments.

    Celery's ``reserved`` and ``scheduled`` replies carry the raw arguments from the
    message body (``info(safe=False)``); only Flower's ``active`` asks for the reprs.
    """

    def info(self, safe=False):
        info = super().info(safe=safe)
        info["args"] = redact(info.get("args"))
        info["kwargs"] = redact(info.get("kwargs"))
        return info


class RedactingTask(Task):
    """The app's base task class (``Celery(task_cls=...)``): requests redact ``info()``."""

    Request = "celeryapp.overrides.request:TurboRequest"
