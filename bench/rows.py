"""A 1M-row DuckDB result in the client's hands: submit -> rows loaded.

Agent Turbo: ``run_query.delay(sql)``; the worker spills the result to Parquet
(past ``max_inline_rows``), the client reads ``parquet_path`` into a pyarrow
table. Plain Celery: a task running the same query returns ``fetchall()``
through Redis (JSON), the client's ``get()`` gives the list of rows. Both
share the worker's host, as a shared TURBO_RESULTS_DIR would. Median of a few
repeats, 2 worker processes.
"""
from __future__ import annotations

import time

from .context import median


def sql_for(rows: int) -> str:
    return (f"SELECT i AS id, i::DOUBLE * 0.5 AS amount, 'customer-' || (i % 1000) AS customer "
            f"FROM range({rows}) t(i)")


def run(ctx) -> dict:
    n = 100_000 if ctx.quick else 1_000_000
    repeats = 1 if ctx.quick else 3
    sql = sql_for(n)
    figures: dict = {"rows": n, "columns": 3, "sql": sql, "repeats": repeats}

    from bench.turbo_tasks import QUEUE
    from tasks.query import run_query
    from tasks.results import read_parquet

    def turbo_once() -> dict:
        start = time.perf_counter()
        result = run_query.delay(sql, queue=QUEUE).get(timeout=300)
        stored = time.perf_counter()
        table = read_parquet(result["parquet_path"])
        end = time.perf_counter()
        assert table.num_rows == n and result["row_count"] == n, result
        return {"wall_s": end - start, "get_s": stored - start, "read_s": end - stored,
                "parquet_bytes": result.get("parquet_bytes")}

    rows_task = ctx.task("plain", "rows")

    def plain_once() -> dict:
        start = time.perf_counter()
        rows = rows_task.delay(sql).get(timeout=600)
        end = time.perf_counter()
        assert len(rows) == n, len(rows)
        return {"wall_s": end - start}

    for side, once in (("plain", plain_once), ("turbo", turbo_once)):
        with ctx.worker(side, 2):
            if side == "turbo":
                run_query.delay("SELECT 1", queue=QUEUE).get(timeout=120)  # warm-up
            else:
                rows_task.delay("SELECT 1").get(timeout=120)
            runs = [once() for _ in range(repeats)]
        wall = median([r["wall_s"] for r in runs])
        figures[side] = {"wall_s": wall, "runs": runs}
        ctx.say(f"rows {side}: {n} rows in the client after {wall:.3f} s")
    figures["ratio"] = figures["plain"]["wall_s"] / figures["turbo"]["wall_s"]
    return figures
