"""Everything the demo prints: progress lines, the tables, the summary, Flower's view.

The other modules decide and do; they call one function here per thing to say,
so the wording and layout of the demo's output live in this file only.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from celeryapp.config import get_settings, redact_url
from celeryapp.dev.demo import data as demo_data
from celeryapp.dev.localflower import FlowerProcess
from celeryapp.dev.localredis import LocalRedis
from celeryapp.dev.localworker import WorkerProcess

if TYPE_CHECKING:  # annotations only: these modules import this one to print
    from celeryapp.dev.demo.fetch import StoredResult
    from celeryapp.dev.demo.services import Services
    from celeryapp.dev.demo.workload import Outcome

console = Console(highlight=False,
                  width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140)


def section(title: str) -> None:
    console.rule(title)


# --- starting and stopping -------------------------------------------------------------
def setup(state_dir: Path) -> None:
    console.print(f"State, logs and results in {show(state_dir)}; "
                  f"{os.cpu_count() or 1} CPU cores.")


def broker_given(url: str) -> None:
    console.print(f"Broker: {redact_url(url)} (from TURBO_BROKER_URL)")


def broker_started(redis: LocalRedis) -> None:
    console.print(f"Broker: private redis-server {redact_url(redis.url)} "
                  f"(pid {redis.process.pid}, data in {show(redis.workdir)})")


def database(db: Path, rows: int, built: bool, build_s: float) -> None:
    console.print(f"Sample database {show(db)}: {rows:,} orders, "
                  f"{demo_data.customers_for(rows):,} customers, {demo_data.PRODUCTS:,} products "
                  + (f"(built in {build_s:.1f} s)" if built else "(up to date, reused)")
                  + f", {db.stat().st_size / 1e6:.0f} MB")


def worker_ready(worker: WorkerProcess) -> None:
    slots = (f"{worker.concurrency} threads" if worker.pool == "threads"
             else f"{worker.concurrency} processes")
    console.print(f"{worker.name} ready (pid {worker.pid}, {worker.pool} pool, {slots}, "
                  f"queues {worker.queues}, log {show(worker.logfile)})")


def flower_ready(flower: FlowerProcess) -> None:
    console.print(f"Flower dashboard: [bold]{flower.url}[/]  user [bold]{flower.user}[/]"
                  f"  password [bold]{flower.password}[/]  (up while the demo runs; "
                  f"--keep leaves it up)")


def stopping(names: list[str]) -> None:
    console.print(f"Stopping {', '.join(names)} ...")


def step_failed(step: str, exc: Exception) -> None:
    console.print(f"  [red]{step} failed: {escape(str(exc))}[/]")


def leftovers(lines: list[str]) -> None:
    for line in lines:
        console.print(f"  [yellow]leftover {escape(line)}[/]")


def stopped(seconds: float) -> None:
    console.print(f"Stopped in {seconds:.1f} s.")


def kept(services: Services) -> None:
    """``--keep``: what stays up, and the variables to reach it."""
    names = ", ".join(w.name for w in services.workers)
    console.print(f"[bold]--keep:[/] {'Redis, ' if services.redis else ''}{names} and Flower "
                  f"keep running (Flower {services.flower.url}, user {services.flower.user}, "
                  f"password {services.flower.password}); stop them with `make demo-down`. "
                  f"To use them:")
    for name in ("TURBO_BROKER_URL", "TURBO_RESULT_BACKEND", "TURBO_DUCKDB_PATH",
                 "TURBO_RESULTS_DIR"):
        if name in os.environ:
            console.print(f"  export {name}={os.environ[name]}", soft_wrap=True)


# --- state of earlier runs (--down) -----------------------------------------------------
def another_demo_running(pid: int, state_path: Path) -> None:
    console.print(f"[red]Another demo is running (pid {pid}) with {show(state_path)}; "
                  f"stop it with `make demo-down` or use --state-dir.[/]")


def earlier_run(state_path: Path, stopped_lines: list[str]) -> None:
    console.print(f"Found {show(state_path)} from an earlier run: "
                  f"{'; '.join(stopped_lines) if stopped_lines else 'nothing left running'}.")


def nothing_to_stop(state_path: Path) -> None:
    console.print(f"Nothing to stop: no {show(state_path)}.")


def stopped_recorded(lines: list[str]) -> None:
    for line in lines:
        console.print(f"  {escape(line)}")


def state_removed(state_path: Path, state_dir: Path) -> None:
    console.print(f"Removed {show(state_path)} (database, logs and results stay in "
                  f"{show(state_dir)}).")


# --- the end of a run -------------------------------------------------------------------
def interrupted() -> None:
    console.print("\n[yellow]Interrupted: stopping everything the demo started.[/]")


def demo_failed(exc: Exception, logs: Path) -> None:
    console.print(f"[red]Demo failed: {escape(str(exc))}[/]\nLogs: {show(logs)}")


def queries_failed(count: int, logs: Path) -> None:
    console.print(f"[red]{count} queries failed; worker logs in {show(logs)}.[/]")


def finished(seconds: float) -> None:
    console.print(f"Demo finished in {seconds:.1f} s.")


# --- queries ----------------------------------------------------------------------------
def sequential(count: int, seconds: float) -> None:
    console.print(f"{count} queries on one in-process DuckDB connection: "
                  f"{seconds:.2f} s, and the caller is blocked all that time.")


def queries_submitted(count: int, seconds: float) -> None:
    console.print(f"Submitted {count} queries in {seconds * 1000:.0f} ms "
                  f"(the caller is free from here on); results as they arrive:")


def task_done(outcome: Outcome) -> None:
    """One line per task as it finishes (``wait_all``'s callback)."""
    mark = "[green]✓[/]" if outcome.ok else "[red]✗[/]"
    where = outcome.get("worker", "")
    detail = (f"task {outcome.get('elapsed_s', outcome.get('duration_s', 0)):.2f} s"
              if outcome.ok else f"[red]{outcome.state}: {short(outcome.value, 160)}[/]")
    console.print(f"  {mark} {outcome.done_at or 0:6.2f} s  {outcome.name:<24} {where:<13} "
                  f"{detail}")


def queries(outcomes: list[Outcome], before: dict[str, tuple[float, int]]) -> None:
    """The queries table, the tasks per worker, and where big results went."""
    console.print(query_table(outcomes, before))
    per_worker = count_by(outcome.get("worker", "none") for outcome in outcomes)
    console.print("Tasks per worker: " + ", ".join(f"{w}: {n}" for w, n in per_worker.items()))
    settings = get_settings()
    console.print(f"Results over TURBO_MAX_INLINE_ROWS={settings.max_inline_rows:,} rows go to "
                  f"Parquet; only a {settings.preview_rows}-row preview travels through Redis.")


def query_table(outcomes: list[Outcome], before: dict[str, tuple[float, int]]) -> Table:
    table = Table(title="Queries on the workers")
    table.add_column("query", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("alone (s)", justify="right")
    table.add_column("task (s)", justify="right")
    table.add_column("done at (s)", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("parquet (spilled)", overflow="fold")
    for outcome in outcomes:
        alone = before.get(outcome.name, (None, None))[0]
        state = "[green]SUCCESS[/]" if outcome.ok else f"[red]{outcome.state}[/]"
        table.add_row(
            outcome.name, state, outcome.get("worker", "-"),
            f"{alone:.2f}" if alone is not None else "-",
            f"{outcome.get('elapsed_s'):.2f}" if outcome.ok else "-",
            f"{outcome.done_at:.2f}" if outcome.done_at is not None else "-",
            f"{outcome.get('row_count'):,}" if outcome.ok else short(outcome.value, 60),
            show(outcome.get("parquet_path")) if outcome.get("parquet_path") else "")
    return table


# --- the results, fetched by another process (--fetch) ----------------------------------
def fetching_elsewhere() -> None:
    console.print(f"\nFetching the results in a separate process "
                  f"([bold]python -m celeryapp.dev.demo --fetch ID...[/], this is pid "
                  f"{os.getpid()}):")


def fetched(results: list[StoredResult]) -> None:
    """The results as ``--fetch`` read them, and the Parquet files it read back."""
    table = Table(title=f"Results fetched by pid {os.getpid()}")
    for column in ("query", "task id", "state", "worker", "rows", "first row"):
        table.add_column(column, overflow="fold", no_wrap=column in ("query", "worker"))
    for result in results:
        ok, value = result.ok, result.value
        rows = value.get("rows") if ok else None
        table.add_row(result.name or "-", result.task_id, result.state,
                      value.get("worker", "") if ok else "",
                      f"{value['row_count']:,}" if ok else "-",
                      short(rows[0] if rows else (value if not ok else ""), 70))
    console.print(table)
    for result in results:
        if result.spilled_rows is not None:
            console.print(f"  {result.name}: read {result.spilled_rows:,} rows back from "
                          f"{show(result.value['parquet_path'])}")
    succeeded = sum(result.ok for result in results)
    console.print(f"Fetched {len(results)} results in a separate process (pid {os.getpid()}): "
                  f"{succeeded} SUCCESS, {len(results) - succeeded} other")


# --- agent runs -------------------------------------------------------------------------
def agents_without_claude() -> None:
    console.print("[yellow]claude not found on PATH: agent runs skipped (set "
                  "TURBO_CLAUDE_BIN to the claude executable, or install Claude Code "
                  "and log in).[/]")


def agents_without_results() -> None:
    console.print("[yellow]No query results to ask about: agent runs skipped.[/]")


def agents_starting(claude: str) -> None:
    console.print(f"\nAgent runs with {claude} (one per prompt, on the agents queue: "
                  f"the io workers' threads):")


def agents(outcomes: list[Outcome]) -> None:
    console.print(agent_table(outcomes))


def agent_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Agent runs")
    for column in ("run", "state", "worker", "duration (s)", "cost ($)", "turns", "answer"):
        table.add_column(column, overflow="fold", no_wrap=column in ("run", "worker", "state"))
    for outcome in outcomes:
        table.add_row(outcome.name, outcome.state, outcome.get("worker", "-"),
                      f"{outcome.get('duration_s', 0):.1f}" if outcome.ok else "-",
                      f"{outcome.get('cost_usd') or 0:.4f}" if outcome.ok else "-",
                      str(outcome.get("num_turns", "-")),
                      short(outcome.get("result") if outcome.ok else outcome.value, 400))
    return table


# --- the summary ------------------------------------------------------------------------
def summary(began: float, setup_s: float, sequential_s: float, submit_s: float,
            wall_s: float, outcomes: list[Outcome], agents: list[Outcome] | None,
            flower_seen: dict[str, int] | None, workers: int) -> None:
    """The closing table: before against after, agent runs, what Flower saw, and why
    running side by side may not be faster on this machine."""
    ok = sum(outcome.ok for outcome in outcomes)
    task_sum = sum(outcome.get("elapsed_s", 0) for outcome in outcomes)
    speedup = sequential_s / wall_s if wall_s else 0.0
    table = Table(title="Summary", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column()
    table.add_row("queries", f"{ok} succeeded, {len(outcomes) - ok} failed")
    table.add_row("before: one after another, in-process",
                  f"{sequential_s:.2f} s, the caller blocked all along")
    table.add_row(f"after: all at once on {workers} workers",
                  f"{wall_s:.2f} s until the last result; the caller blocked "
                  f"{submit_s * 1000:.0f} ms to submit")
    table.add_row("speed-up (wall time)", f"{speedup:.2f}x")
    table.add_row("sum of task elapsed_s", f"{task_sum:.2f} s "
                  f"({task_sum / wall_s:.1f} queries running at once on average)")
    if agents is None:
        table.add_row("agent runs", "skipped: claude not found on PATH")
    else:
        cost = sum(outcome.get("cost_usd") or 0 for outcome in agents)
        table.add_row("agent runs", f"{sum(a.ok for a in agents)} of {len(agents)} succeeded, "
                      f"${cost:.4f}")
    if flower_seen is not None:
        table.add_row("Flower saw (this run's tasks)",
                      ", ".join(f"{n} {s}" for s, n in flower_seen.items()) or "none yet")
    table.add_row("setup (workers, Flower, database)", f"{setup_s:.1f} s")
    table.add_row("total demo wall time", f"{time.monotonic() - began:.1f} s (before shutdown)")
    console.print(table)
    cores = os.cpu_count() or 1
    if speedup < 1.5:
        console.print(
            f"[dim]Why running them side by side is not faster on this machine: it has {cores} "
            f"CPU cores and DuckDB already spreads each query over all of them, so parallel "
            f"queries compete for the same cores (each task's elapsed_s grows). What the "
            f"workers give here is a caller that is free after {submit_s * 1000:.0f} ms and "
            f"results any process can fetch; more workers on more hosts, or a remote engine "
            f"(Databricks), add capacity instead of sharing it.[/]")


# --- small helpers ----------------------------------------------------------------------
def show(path: Any) -> str:
    """A path relative to the working directory when it is below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def short(value: Any, limit: int) -> str:
    """One line of at most ``limit`` characters, safe to print as rich markup."""
    text = " ".join(str(value).split())
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def count_by(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
