"""delay() latency: what a caller pays per submit (no worker runs, only the publish is timed).

Plain Celery: ``bench.noop.delay()`` on the default app. Agent Turbo:
``run_query.delay("SELECT 1")`` (the project's real submit path: option checks,
priority, time limits) and ``bench.noop.delay()`` on the project's app.

Also a group of 1,000 no-ops, per task: plain ``group(...).apply_async()`` against
the project's ``celeryapp.submit.apply_group`` (the same group, one pipeline).
"""
from __future__ import annotations

import time

from .context import percentiles


def _time_interleaved(calls: dict, n: int, rounds: int = 10) -> dict[str, list[float]]:
    """Time ``n`` calls of each in alternating blocks, so that drift in the machine's
    speed during the run (a shared 2-core box) weighs on every side alike."""
    for call in calls.values():  # warm the connection pool and the code paths
        for _ in range(min(200, n)):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    block = max(1, n // rounds)
    while any(len(s) < n for s in samples.values()):
        for name, call in calls.items():
            for _ in range(min(block, n - len(samples[name]))):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return samples


def _group_submit_us(submit, noop, size: int, repeats: int) -> float:
    """Median µs per task of submitting a ``size``-task group."""
    from celery import group

    from .context import median

    runs = []
    for _ in range(repeats):
        signature = group(noop.s() for _ in range(size))
        start = time.perf_counter()
        submit(signature)
        runs.append((time.perf_counter() - start) / size * 1e6)
    return median(runs)


def run(ctx) -> dict:
    n = 300 if ctx.quick else 3000
    for side in ("plain", "turbo"):
        ctx.flush(side)
    plain_noop = ctx.task("plain", "noop")
    turbo_noop = ctx.task("turbo", "noop")
    from tasks.query import run_query

    samples = _time_interleaved({"plain": plain_noop.delay,
                                 "turbo": lambda: run_query.delay("SELECT 1"),
                                 "turbo_noop": turbo_noop.delay}, n)
    figures = {"calls": n, "unit": "µs", "interleaved_blocks": 10,
               **{name: percentiles(values, 1e6) for name, values in samples.items()}}
    from celeryapp.submit import apply_group

    size, repeats = (100, 1) if ctx.quick else (1000, 3)
    figures["group"] = {
        "size": size,
        "plain_us_per_task": _group_submit_us(lambda g: g.apply_async(), plain_noop, size, repeats),
        "turbo_us_per_task": _group_submit_us(apply_group, turbo_noop, size, repeats),
    }
    for side in ("plain", "turbo"):  # nothing consumes these: drop them
        ctx.flush(side)
    ctx.say(f"delay() p50: plain {figures['plain']['p50']:.0f} µs, turbo run_query "
            f"{figures['turbo']['p50']:.0f} µs, turbo bench.noop "
            f"{figures['turbo_noop']['p50']:.0f} µs")
    ctx.say(f"group of {size} submitted: plain {figures['group']['plain_us_per_task']:.0f} "
            f"µs/task, turbo apply_group {figures['group']['turbo_us_per_task']:.0f} µs/task")
    return figures
