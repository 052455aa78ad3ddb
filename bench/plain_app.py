"""The baseline: a plain Celery app with DEFAULT settings and the bench tasks.

    celery -A bench.plain_app worker        (BENCH_PLAIN_URL names the Redis)

Nothing is tuned: ``Celery("plain", broker=URL, backend=URL)`` as a user would
write it, so acks early, prefetch x4, no events, no STARTED state, queue
``celery``. The tasks are the same as the project's (bench/turbo_tasks.py).
"""
from __future__ import annotations

import os
import time

from celery import Celery

URL = os.environ.get("BENCH_PLAIN_URL", "redis://localhost:6379/0")

app = Celery("plain", broker=URL, backend=URL)

# shared=False only keeps these out of the other app that the bench's client process
# imports too (bench/turbo_tasks.py registers the same names); no effect on the worker.


@app.task(name="bench.noop", shared=False)
def noop():
    return None


@app.task(name="bench.sleep", shared=False)
def sleep(seconds: float):
    """Sleep; return when it started and ended (wall clock)."""
    started = time.time()
    time.sleep(seconds)
    return {"start": started, "end": time.time()}


@app.task(name="bench.stamp", shared=False)
def stamp():
    """A chord header: the time it ends."""
    return time.time()


@app.task(name="bench.fan_in", shared=False)
def fan_in(stamps):
    """A chord body: the time it starts, and the last header's end."""
    return {"start": time.time(), "last_header_end": max(stamps), "headers": len(stamps)}


@app.task(name="bench.rows", shared=False)
def rows(sql: str):
    """The same DuckDB query as run_query, every row returned inline through Redis."""
    import duckdb

    with duckdb.connect() as connection:
        return connection.sql(sql).fetchall()
