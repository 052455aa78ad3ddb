"""The bench tasks on this project's app, in their own queue.

    celery -A celeryapp worker -I bench.turbo_tasks -Q bench

Same bodies as bench/plain_app.py; every task is sent to :data:`QUEUE` (the
task's ``queue`` option, so a chord body or a workflow step goes there too).
"""
from __future__ import annotations

import os
import time

from celeryapp import app

QUEUE = "bench"


@app.task(name="bench.noop", queue=QUEUE, shared=False)
def noop():
    return None


@app.task(name="bench.sleep", queue=QUEUE, shared=False)
def sleep(seconds: float):
    """Sleep; return when it started and ended (wall clock)."""
    started = time.time()
    time.sleep(seconds)
    return {"start": started, "end": time.time()}


@app.task(name="bench.stamp", queue=QUEUE, shared=False)
def stamp():
    """A chord header: the time it ends."""
    return time.time()


@app.task(name="bench.fan_in", queue=QUEUE, shared=False)
def fan_in(stamps):
    """A chord body: the time it starts, and the last header's end."""
    return {"start": time.time(), "last_header_end": max(stamps), "headers": len(stamps)}


@app.task(name="bench.load_engines", queue=QUEUE, shared=False)
def load_engines(hold: float = 0.5):
    """Run a DuckDB query through turbo.query's code and touch pyarrow; return this pid.

    ``hold`` keeps the slot busy so that the next one lands on another child.
    """
    import pyarrow  # noqa: F401  (tasks.results imports it already; kept explicit)

    from tasks.query import run_query

    result = run_query.run("SELECT sum(i) AS total, count(*) AS n FROM range(1000000) t(i)")
    time.sleep(hold)
    return {"pid": os.getpid(), "row_count": result["row_count"]}
