"""delay() latency: this project's turbo.query vs a plain Celery task, same Redis.

Only the publish is timed (no worker runs): what a caller pays per submit.
"""
from __future__ import annotations

import os
import statistics
import time

from rich.console import Console
from rich.table import Table


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_us": pick(0.50) * 1e6, "p99_us": pick(0.99) * 1e6,
            "mean_us": statistics.fmean(ordered) * 1e6}


def _time_calls(call, n: int) -> list[float]:
    for _ in range(50):  # warm the connection pool
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def run(broker_url: str, n: int) -> dict:
    from celery import Celery

    plain = Celery("plain", broker=broker_url, backend=broker_url)

    @plain.task(name="plain.noop")
    def noop(sql):
        return sql

    os.environ["TURBO_BROKER_URL"] = broker_url
    from celeryapp.config import reset_settings

    reset_settings()
    from tasks.query import run_query

    figures = {
        "plain_celery": _percentiles(_time_calls(lambda: noop.delay("SELECT 1"), n)),
        "agent_turbo": _percentiles(_time_calls(lambda: run_query.delay("SELECT 1"), n)),
    }
    table = Table(title=f"delay() latency, {n} calls each")
    table.add_column("app")
    for column in ("p50 µs", "p99 µs", "mean µs"):
        table.add_column(column, justify="right")
    for name, values in figures.items():
        table.add_row(name, *(f"{values[k]:.0f}" for k in ("p50_us", "p99_us", "mean_us")))
    Console().print(table)
    return figures
