"""What a ``turbo.query`` costs beyond a no-op, and whether warm engine sessions pay off.

1. ``SELECT 1`` throughput: N ``run_query.delay("SELECT 1")`` on the project's worker
   against N ``bench.noop`` on plain Celery, same Redis, ``-c 2`` each, median of
   alternating rounds; time from the first submit to the last result stored (the
   worker's ``date_done``). What is left between the two is the engine session per
   task (DuckDB ``connect()`` alone costs ~20 ms) and the runner's own work.
2. Eight aggregate queries of the demo (``celeryapp.dev.demo.data``) over its 10 M-row
   file database, built once and cached next to the results (var/bench): one after
   another on one warm in-process connection (what a caller blocks on), against all
   eight submitted at once to 2 workers x 2 slots on the same file (after a warm-up
   pass, so a worker that keeps its sessions answers from a warm buffer cache). Rounds
   alternate; each side reports its median.

Targets: SELECT 1 at >= 0.5x the no-op rate; side by side >= 1.0x sequential.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import profile
from .context import median
from .throughput import rounds_figures

AGGREGATES = 8


def _submit_queries(sql: str, n: int, queue: str) -> list[str]:
    from tasks.query import run_query

    return [run_query.delay(sql, queue=queue).id for _ in range(n)]


def _select_one_round(ctx, side: str, n: int, concurrency: int) -> dict:
    from bench.turbo_tasks import QUEUE

    with ctx.worker(side, concurrency) as worker:
        if side == "plain":
            noop = ctx.task("plain", "noop")
            ctx.wait_results(side, [noop.delay().id for _ in range(50)], timeout=120)
        else:
            ctx.wait_results(side, _submit_queries("SELECT 1", 50, QUEUE), timeout=120)
        with profile.sampling(ctx, worker, f"select-one-{side}"):
            start = time.time()
            if side == "plain":
                ids = [noop.delay().id for _ in range(n)]
            else:
                ids = _submit_queries("SELECT 1", n, QUEUE)
            submitted = time.time()
            last = ctx.wait_results(side, ids, timeout=600)
        threads = None
        if side == "turbo":  # what the engine runs with, as a query sees it
            from tasks.query import run_query

            threads = run_query.delay("SELECT current_setting('threads') AS t",
                                      queue=QUEUE).get(timeout=60)["rows"][0][0]
    wall = last - start
    label = "plain no-op" if side == "plain" else "turbo SELECT 1"
    ctx.say(f"{label}: {n} tasks in {wall:.2f} s = {n / wall:.0f}/s "
            f"(submitting took {submitted - start:.2f} s)")
    return {"wall_s": wall, "submit_s": submitted - start, "tasks_per_s": n / wall,
            "duckdb_threads": threads}


def select_one(ctx, n: int, rounds: int, concurrency: int = 2) -> dict:
    runs: dict[str, list[dict]] = {"plain": [], "turbo": []}
    for _ in range(rounds):
        for side in runs:
            runs[side].append(_select_one_round(ctx, side, n, concurrency))
    figures = {"tasks": n, "concurrency": concurrency, "rounds": rounds,
               **rounds_figures(runs)}
    ctx.say(f"SELECT 1: turbo/plain no-op {figures['ratio']:.2f} "
            f"(rounds {figures['round_ratios']}; target >= 0.5)")
    return figures


# --- eight aggregates over the demo's file database -------------------------------------
@contextmanager
def _worker_env(**values: str):
    """Workers inherit this process's environment when they start: set it around that."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sequential(connection, queries) -> float:
    from celeryapp.dev.demo.data import _fetch_arrow

    started = time.perf_counter()
    for query in queries:
        _fetch_arrow(connection.sql(query.sql, params=query.params))
    return time.perf_counter() - started


def _side_by_side(ctx, queries, queue: str) -> tuple[float, dict]:
    from tasks.query import run_query

    start = time.time()
    handles = [run_query.delay(q.sql, params=q.params, queue=queue) for q in queries]
    last = ctx.wait_results("turbo", [h.id for h in handles], timeout=600)
    results = [h.get(timeout=60) for h in handles]
    per_worker: dict = {}
    for result in results:
        per_worker[result["worker"]] = per_worker.get(result["worker"], 0) + 1
    return last - start, {"per_worker": per_worker,
                          "elapsed_s": [result["elapsed_s"] for result in results]}


def aggregates(ctx, rows: int, rounds: int, workers: int = 2, slots: int = 2) -> dict:
    import duckdb

    from bench.turbo_tasks import QUEUE
    from celeryapp.dev.demo.data import QUERIES, ensure_database

    path = Path(ctx.out_dir).resolve() / f"demo-{rows}.duckdb"
    built, seconds = ensure_database(path, rows)
    ctx.say(f"aggregates: {'built' if built else 'reusing'} {path} ({rows:,} orders"
            + (f", {seconds:.1f} s" if built else "") + ")")
    queries = QUERIES[:AGGREGATES]
    figures: dict = {"rows": rows, "queries": [q.name for q in queries], "rounds": rounds,
                     "workers": workers, "slots": slots, "database": str(path)}
    sequential: list[float] = []
    side_by_side: list[float] = []
    details: list[dict] = []
    with _worker_env(TURBO_DUCKDB_PATH=str(path)), ExitStack() as stack:
        for number in range(workers):
            stack.enter_context(ctx.worker("turbo", slots, flush=number == 0))
        for _ in range(2):  # warm-up: every pool process runs a query or two
            _side_by_side(ctx, queries, QUEUE)
        with duckdb.connect(str(path), read_only=True) as connection:
            connection.execute("SET enable_progress_bar = false")
            _sequential(connection, queries)  # warm-up, as the workers had
            for _ in range(rounds):
                sequential.append(_sequential(connection, queries))
                wall, detail = _side_by_side(ctx, queries, QUEUE)
                side_by_side.append(wall)
                details.append(detail)
                ctx.say(f"aggregates: one after another {sequential[-1]:.2f} s, "
                        f"side by side {wall:.2f} s ({detail['per_worker']})")
    figures["sequential"] = {"wall_s": median(sequential), "rounds": sequential}
    figures["side_by_side"] = {"wall_s": median(side_by_side), "rounds": side_by_side,
                               "details": details}
    figures["ratio"] = figures["sequential"]["wall_s"] / figures["side_by_side"]["wall_s"]
    ctx.say(f"aggregates: side by side on {workers} workers x {slots} slots is "
            f"{figures['ratio']:.2f}x one after another in one process (target >= 1.0)")
    return figures


def run(ctx) -> dict:
    n = 200 if ctx.quick else 1000
    rounds = 1 if ctx.quick else 3
    rows = 1_000_000 if ctx.quick else 10_000_000
    figures = {"select_one": select_one(ctx, n, rounds)}
    figures["aggregates"] = aggregates(ctx, rows, rounds)
    try:
        import tasks.engines.pool  # noqa: F401
        figures["session_pool"] = True
    except ImportError:  # the code before sessions were kept (a worktree of an older commit)
        figures["session_pool"] = False
    return figures
