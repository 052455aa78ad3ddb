"""Submitting many tasks at once: one Redis round trip per batch instead of one per task.

Celery publishes every message of a group on its own (an LPUSH and its reply
each). kombu's Redis transport can buffer publishes in a pipeline
(``Producer.batch``); :func:`batch` hands Celery such a producer, so any
``apply_async``/``delay``/``group``/``chord`` given ``producer=`` inside the
block is published when the block ends (or every ``max_size`` commands)::

    from celeryapp.submit import apply_group, batch

    results = apply_group(group(run_query.s(sql) for sql in statements))

    with batch() as producer:
        for sql in statements:
            run_query.apply_async((sql,), producer=producer)

Nothing is published if the block raises. A failed flush raises kombu's
``BatchPublishError`` (delivery of that batch uncertain) instead of retrying
blindly, which could publish twice.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_MAX_SIZE = 100  # Redis commands per pipeline: workers start on the first ones early


def _app(app):
    if app is not None:
        return app
    from celeryapp.factory import app as default_app  # built on first use

    return default_app


def registered(name: str, app=None):
    """The app's task ``name`` - its own ``apply_async`` checks the request - found by
    name: the app imports its task modules (``include``) if this process has not yet.
    How code under ``celeryapp`` submits ``turbo.query``/``turbo.agent`` without
    importing ``tasks``."""
    app = _app(app)
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


@contextmanager
def batch(app=None, max_size: int = DEFAULT_MAX_SIZE) -> Iterator:
    """A producer whose publishes are pipelined until the block ends."""
    with _app(app).producer_or_acquire() as producer, producer.batch(max_size):
        yield producer


def apply_group(signature, app=None, max_size: int = DEFAULT_MAX_SIZE, **options):
    """``signature.apply_async(**options)`` (a group, chord or single task) in one batch."""
    with batch(app or getattr(signature, "app", None), max_size) as producer:
        return signature.apply_async(producer=producer, **options)
