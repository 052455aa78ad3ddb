"""``make demo``: the whole system on one machine, from nothing to results.

It starts a private Redis (unless TURBO_BROKER_URL is set), two real workers
(worker@alpha, worker@beta) and Flower, builds a sample DuckDB database, runs
analysis queries one after another in-process (the "before") and then all at
once on the workers, fetches the results from a separate process, runs a few
real agent CLI runs when ``claude`` is installed, and stops everything again.

Every process it starts is recorded in ``<state dir>/state.json`` the moment it
starts (celeryapp/dev/demo/state.py), so ``python -m celeryapp.dev.demo --down`` (``make demo-down``) can stop
leftovers of a run that was killed. Options and variables:

  --state-dir / TURBO_DEMO_DIR   where state, logs, database, results go (var/demo)
  --rows / TURBO_DEMO_ROWS       orders in the sample database (10,000,000)
  --keep                         leave Redis, workers and Flower running afterwards
  TURBO_DEMO_MODEL               model for the agent runs (default: the CLI's own)
  --fetch [LABEL=]ID ...         print stored results (what the demo runs in a subprocess)
  --down                         stop whatever a demo left running
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from celery.states import READY_STATES
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from celeryapp.dev.demo import data as demo_data
from celeryapp.config import get_settings, redact_url, reset_settings
from celeryapp.dev.demo.state import StateFile, cmdline, stop_recorded
from celeryapp.monitoring.flower import FlowerProcess
from celeryapp.dev.localredis import LocalRedis, free_port
from celeryapp.dev.localworker import WorkerProcess
from celeryapp.core.names import AGENT_TASK, QUERY_TASK
from celeryapp.submit import registered

ROOT = Path(__file__).resolve().parents[1]
WORKER_HOSTS = ("alpha", "beta")
WORKER_QUEUES = "queries,agents,default"
WORKER_CONCURRENCY = 2
FLOWER_USER = "demo"
QUERY_WAIT_S = 600.0
AGENT_TIMEOUT_S = 240.0

console = Console(highlight=False,
                  width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140)


def down(state_dir: Path) -> int:
    """``--down``: stop what a demo left running and forget it."""
    state = StateFile(state_dir)
    if state.load() is None:
        console.print(f"Nothing to stop: no {_show(state.path)}.")
        return 0
    for line in stop_recorded(state):
        console.print(f"  {escape(line)}")
    state.clear()
    console.print(f"Removed {_show(state.path)} (database, logs and results stay in "
                  f"{_show(state_dir)}).")
    return 0


# --- services ---------------------------------------------------------------------------
@dataclass
class Services:
    """What the demo started, stopped in reverse order whatever happens."""

    state: StateFile
    redis: LocalRedis | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    flower: FlowerProcess | None = None

    def stop(self) -> None:
        started = time.monotonic()
        names = (["Flower"] if self.flower else []) + [w.name for w in self.workers] + (
            ["Redis"] if self.redis else [])
        if not names:
            return
        console.print(f"Stopping {', '.join(names)} ...")
        if self.flower:
            _attempt(self.flower.stop)
        for worker in self.workers:  # warm shutdown of both at once
            if worker.process and worker.process.poll() is None:
                worker.process.terminate()
        for worker in self.workers:
            _attempt(worker.stop)
        if self.redis:
            _attempt(self.redis.stop)
        leftovers = stop_recorded(self.state, quiet=True)
        for line in leftovers:
            console.print(f"  [yellow]leftover {escape(line)}[/]")
        console.print(f"Stopped in {time.monotonic() - started:.1f} s.")

def _attempt(step: Callable[[], None]) -> None:
    """Run one shutdown step; a failure must not keep the next ones from running."""
    try:
        step()
    except Exception as exc:  # reported, and the sweep in Services.stop follows
        console.print(f"  [red]{step.__qualname__} failed: {escape(str(exc))}[/]")


def start_broker(services: Services, state_dir: Path) -> str:
    """Use TURBO_BROKER_URL when set; otherwise start a private redis-server."""
    given = os.environ.get("TURBO_BROKER_URL")
    if given:
        console.print(f"Broker: {redact_url(given)} (from TURBO_BROKER_URL)")
        return given
    redis = LocalRedis(workdir=state_dir / "redis", password=secrets.token_hex(16))
    services.redis = redis
    redis.start()
    services.state.track("redis", redis.process.pid, ["redis-server", f":{redis.port}"])
    os.environ["TURBO_BROKER_URL"] = f"{redis.url}/0"
    os.environ["TURBO_RESULT_BACKEND"] = f"{redis.url}/1"
    console.print(f"Broker: private redis-server {redact_url(redis.url)} "
                  f"(pid {redis.process.pid}, data in {_show(redis.workdir)})")
    return os.environ["TURBO_BROKER_URL"]


def configure_environment(state_dir: Path) -> None:
    """Settings for this process and the workers it starts (they inherit os.environ).

    Must run before the Celery app is built: ``celeryapp.app`` reads the
    environment once, at first use.
    """
    if "celeryapp.factory" in sys.modules:
        raise RuntimeError("the Celery app was built before the demo set its environment")
    os.environ["TURBO_DUCKDB_PATH"] = str(state_dir / "sample.duckdb")
    os.environ["TURBO_RESULTS_DIR"] = str(state_dir / "results")
    os.environ.setdefault("TURBO_AGENT_SLOTS_DIR", str(state_dir / "agent-slots"))
    reset_settings()


def start_workers(services: Services, logs: Path) -> None:
    """Start both workers without waiting: they boot while the database is built."""
    for host in WORKER_HOSTS:
        logfile = logs / f"{host}.log"
        worker = WorkerProcess(name=f"worker@{host}", queues=WORKER_QUEUES,
                               concurrency=WORKER_CONCURRENCY, logfile=logfile)
        services.workers.append(worker)
        worker.start()
        services.state.track(worker.name, worker.pid, [worker.name, str(logfile)])


def start_flower(services: Services, logs: Path) -> None:
    """Flower through the project's launcher (login required), on a free loopback port;
    the password goes through the environment, not argv."""
    port = free_port()  # also on the command line: `make demo-down` recognises it by that
    services.flower = FlowerProcess(port=port, user=FLOWER_USER,
                                    password=secrets.token_urlsafe(12),
                                    logfile=logs / "flower.log",
                                    extra_args=(f"--port={port}",)).launch()
    services.state.track("flower", services.flower.process.pid,
                         ["celeryapp.monitoring.flower", f"--port={port}"])


def flower_task_count(services: Services, task_ids: set[str],
                      wait: float = 3.0) -> dict[str, int] | None:
    """States of this run's tasks as Flower saw them (from its REST API), or None if it
    cannot say. Task events reach Flower in batches (up to 0.1 s late), so ask again
    for up to ``wait`` seconds until every task is there in a final state. Flower keeps
    its state across runs (persistent): earlier demos' tasks are left out."""
    deadline = time.monotonic() + wait
    while True:
        try:
            status, body = services.flower.get("/api/tasks", timeout=5)
            tasks = json.loads(body) if status == 200 else None
        except (OSError, ValueError):
            return None
        if not isinstance(tasks, dict):
            return None
        counts = count_states(tasks, task_ids)
        final = sum(n for state, n in counts.items() if state in READY_STATES)
        if final == len(task_ids) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def count_states(flower_tasks: dict, task_ids: set[str]) -> dict[str, int]:
    """Flower's ``/api/tasks`` answer (task id -> task), counted by state over ``task_ids``."""
    return _count_by(task.get("state", "?") for task_id, task in flower_tasks.items()
                     if task_id in task_ids)


# --- running tasks ----------------------------------------------------------------------
@dataclass
class Outcome:
    """One submitted task as the demo saw it finish."""

    name: str
    task_id: str
    state: str = "PENDING"
    value: Any = None  # the result dict on SUCCESS, else the error
    done_at: float | None = None  # seconds after submission

    @property
    def ok(self) -> bool:
        return self.state == "SUCCESS"

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default) if isinstance(self.value, dict) else default


def wait_all(handles: dict[str, Any], started: float, timeout: float,
             on_done: Callable[[Outcome], None]) -> list[Outcome]:
    """Wait for every AsyncResult, reporting each as it finishes.

    ``join_native`` listens on the Redis result backend's pub/sub instead of
    polling every key, so the waiting caller costs no CPU the workers need.
    """
    from celery.exceptions import TimeoutError as ResultTimeout
    from celery.result import ResultSet

    by_id = {handle.id: (name, handle) for name, handle in handles.items()}
    outcomes = {name: Outcome(name, handle.id) for name, handle in handles.items()}

    def finished(task_id: str, value: Any) -> None:
        name, handle = by_id[task_id]
        outcome = outcomes[name]
        outcome.state, outcome.value = handle.state, value
        outcome.done_at = time.monotonic() - started
        on_done(outcome)

    try:
        ResultSet(list(handles.values())).join_native(
            timeout=timeout, propagate=False, callback=finished)
    except ResultTimeout:
        for outcome in outcomes.values():
            if outcome.done_at is None:
                outcome.state, outcome.value = "TIMEOUT", f"no result after {timeout:.0f}s"
                on_done(outcome)
    finally:
        # The backend holds unfinished handles until their result comes; let go of
        # them (and their Redis subscription) now, while Redis still runs.
        for outcome in outcomes.values():
            if outcome.done_at is None:
                _forget(handles[outcome.name])
    return list(outcomes.values())


def _forget(handle) -> None:
    """Stop listening for a result nobody waits for any more."""
    with contextlib.suppress(Exception):  # Redis gone already: nothing to unsubscribe from
        handle.backend.remove_pending_result(handle)


def print_done(outcome: Outcome) -> None:
    mark = "[green]✓[/]" if outcome.ok else "[red]✗[/]"
    where = outcome.get("worker", "")
    detail = (f"task {outcome.get('elapsed_s', outcome.get('duration_s', 0)):.2f} s"
              if outcome.ok else f"[red]{outcome.state}: {_short(outcome.value, 160)}[/]")
    console.print(f"  {mark} {outcome.done_at or 0:6.2f} s  {outcome.name:<24} {where:<13} "
                  f"{detail}")


def run_queries(queries: list[demo_data.DemoQuery]) -> tuple[list[Outcome], float, float]:
    """Submit every query at once; return outcomes, submit seconds and wall seconds."""
    run_query = registered(QUERY_TASK)
    started = time.monotonic()
    handles = {query.name: run_query.delay(query.sql, query.params) for query in queries}
    submitted = time.monotonic() - started
    console.print(f"Submitted {len(handles)} queries in {submitted * 1000:.0f} ms "
                  f"(the caller is free from here on); results as they arrive:")
    outcomes = wait_all(handles, started, QUERY_WAIT_S, print_done)
    return outcomes, submitted, time.monotonic() - started


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
            f"{outcome.get('row_count'):,}" if outcome.ok else _short(outcome.value, 60),
            _show(outcome.get("parquet_path")) if outcome.get("parquet_path") else "")
    return table


def fetch_elsewhere(outcomes: list[Outcome]) -> int:
    """Fetch the results by id in a fresh process: they live in Redis, not in this one."""
    labels = [f"{outcome.name}={outcome.task_id}" for outcome in outcomes]
    console.print(f"\nFetching the results in a separate process "
                  f"([bold]python -m celeryapp.dev.demo --fetch ID...[/], this is pid {os.getpid()}):")
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--fetch", *labels]).returncode


def fetch(labels: list[str]) -> int:
    """``--fetch [LABEL=]ID ...``: print stored results; exit 1 unless all succeeded."""
    from celery.result import AsyncResult

    from pyarrow.parquet import read_table as read_parquet  # as tasks.results.read_parquet

    from celeryapp import app

    table = Table(title=f"Results fetched by pid {os.getpid()}")
    for column in ("query", "task id", "state", "worker", "rows", "first row"):
        table.add_column(column, overflow="fold", no_wrap=column in ("query", "worker"))
    succeeded = 0
    notes = []
    for label in labels:
        name, _, task_id = label.rpartition("=")
        result = AsyncResult(task_id, app=app)
        value = result.get(timeout=30, propagate=False) if result.ready() else None
        ok = result.state == "SUCCESS" and isinstance(value, dict)
        succeeded += ok
        rows = value.get("rows") if ok else None
        table.add_row(name or "-", task_id, result.state, value.get("worker", "") if ok else "",
                      f"{value['row_count']:,}" if ok else "-",
                      _short(rows[0] if rows else (value if not ok else ""), 70))
        if ok and value.get("parquet_path"):
            spilled = read_parquet(value["parquet_path"])
            notes.append(f"{name}: read {spilled.num_rows:,} rows back from "
                         f"{_show(value['parquet_path'])}")
    console.print(table)
    for note in notes:
        console.print(f"  {note}")
    console.print(f"Fetched {len(labels)} results in a separate process (pid {os.getpid()}): "
                  f"{succeeded} SUCCESS, {len(labels) - succeeded} other")
    return 0 if succeeded == len(labels) else 1


# --- agents -----------------------------------------------------------------------------
def claude_executable() -> str | None:
    return shutil.which(get_settings().claude_bin)


def run_agents(outcomes: list[Outcome], workdir: Path, model: str | None) -> list[Outcome] | None:
    """Real agent runs about the query results, or None (and a clear line) without claude."""
    found = claude_executable()
    if not found:
        console.print("[yellow]claude not found on PATH: agent runs skipped (set "
                      "TURBO_CLAUDE_BIN to the claude executable, or install Claude Code "
                      "and log in).[/]")
        return None
    run_agent = registered(AGENT_TASK)
    results = {outcome.name: outcome.value for outcome in outcomes if outcome.ok}
    prompts = demo_data.agent_prompts(results)
    if not prompts:
        console.print("[yellow]No query results to ask about: agent runs skipped.[/]")
        return []
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"\nAgent runs with {found} (one per prompt, on the agents queue):")
    started = time.monotonic()
    handles = {name: run_agent.delay(prompt, "claude", cwd=str(workdir), model=model,
                                     max_turns=2, timeout=AGENT_TIMEOUT_S)
               for name, prompt in prompts.items()}
    done = wait_all(handles, started, AGENT_TIMEOUT_S + 120, print_done)
    console.print(agent_table(done))
    return done


def agent_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Agent runs")
    for column in ("run", "state", "worker", "duration (s)", "cost ($)", "turns", "answer"):
        table.add_column(column, overflow="fold", no_wrap=column in ("run", "worker", "state"))
    for outcome in outcomes:
        table.add_row(outcome.name, outcome.state, outcome.get("worker", "-"),
                      f"{outcome.get('duration_s', 0):.1f}" if outcome.ok else "-",
                      f"{outcome.get('cost_usd') or 0:.4f}" if outcome.ok else "-",
                      str(outcome.get("num_turns", "-")),
                      _short(outcome.get("result") if outcome.ok else outcome.value, 400))
    return table


# --- the demo -------------------------------------------------------------------------
def prepare(state: StateFile) -> bool:
    """Stop leftovers of an earlier, killed run; refuse while another demo runs."""
    data = state.load()
    if data is None:
        return True
    other = data.get("demo_pid")
    if other and other != os.getpid() and "celeryapp.dev.demo" in (cmdline(other) or ""):
        console.print(f"[red]Another demo is running (pid {other}) with {_show(state.path)}; "
                      f"stop it with `make demo-down` or use --state-dir.[/]")
        return False
    stopped = stop_recorded(state, quiet=True)
    console.print(f"Found {_show(state.path)} from an earlier run: "
                  f"{'; '.join(stopped) if stopped else 'nothing left running'}.")
    state.clear()
    return True


def run_demo(state_dir: Path, rows: int, keep: bool, model: str | None) -> int:
    began = time.monotonic()
    state = StateFile(state_dir)
    console.rule("[bold]Agent Turbo demo")
    if not prepare(state):
        return 2
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state.begin(state_dir=str(state_dir))
    services = Services(state)
    failed = True
    _terminate_raises_interrupt()
    try:
        code = _demo_steps(services, state_dir, logs, rows, model, began)
        failed = code != 0
        return code
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted: stopping everything the demo started.[/]")
        return 130
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:  # setup failures
        console.print(f"[red]Demo failed: {escape(str(exc))}[/]\nLogs: {_show(logs)}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        if keep and not failed:
            _print_kept(services)
        else:
            services.stop()
            state.clear()
        console.print(f"Demo finished in {time.monotonic() - began:.1f} s.")


def _demo_steps(services: Services, state_dir: Path, logs: Path, rows: int,
                model: str | None, began: float) -> int:
    db, setup_s = start_everything(services, state_dir, logs, rows)

    queries = demo_data.QUERIES
    console.rule("Before: one query after another in this process")
    before = demo_data.run_sequentially(db, queries)
    sequential_s = sum(seconds for seconds, _ in before.values())
    console.print(f"{len(queries)} queries on one in-process DuckDB connection: "
                  f"{sequential_s:.2f} s, and the caller is blocked all that time.")

    console.rule(f"After: all {len(queries)} at once on worker@alpha and worker@beta")
    outcomes, submit_s, wall_s = run_queries(queries)
    console.print(query_table(outcomes, before))
    per_worker = _count_by(outcome.get("worker", "none") for outcome in outcomes)
    console.print("Tasks per worker: " + ", ".join(f"{w}: {n}" for w, n in per_worker.items()))
    settings = get_settings()
    console.print(f"Results over TURBO_MAX_INLINE_ROWS={settings.max_inline_rows:,} rows go to "
                  f"Parquet; only a {settings.preview_rows}-row preview travels through Redis.")
    fetch_code = fetch_elsewhere(outcomes)

    console.rule("Agent runs")
    agents = run_agents(outcomes, state_dir / "agent-work", model)

    this_run = {outcome.task_id for outcome in outcomes + (agents or [])}
    _summary(began, setup_s, sequential_s, submit_s, wall_s, outcomes, agents,
             flower_task_count(services, this_run))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed or fetch_code:
        console.print(f"[red]{len(failed)} queries failed; worker logs in {_show(logs)}.[/]")
        return 1
    return 0


def start_everything(services: Services, state_dir: Path, logs: Path,
                     rows: int) -> tuple[Path, float]:
    """Redis, then workers and Flower booting while the database is built; all ready after.

    Returns the database path and the seconds spent after Redis was up.
    """
    console.print(f"State, logs and results in {_show(state_dir)}; "
                  f"{os.cpu_count() or 1} CPU cores.")
    start_broker(services, state_dir)
    configure_environment(state_dir)
    from celeryapp import app  # built now, from the environment set above

    started = time.monotonic()
    start_workers(services, logs)
    start_flower(services, logs)
    db = state_dir / "sample.duckdb"
    built, build_s = demo_data.ensure_database(db, rows)
    console.print(f"Sample database {_show(db)}: {rows:,} orders, "
                  f"{demo_data.customers_for(rows):,} customers, {demo_data.PRODUCTS:,} products "
                  + (f"(built in {build_s:.1f} s)" if built else "(up to date, reused)")
                  + f", {db.stat().st_size / 1e6:.0f} MB")
    for worker in services.workers:
        worker.wait_ready(app)
        console.print(f"{worker.name} ready (pid {worker.pid}, {WORKER_CONCURRENCY} processes, "
                      f"queues {WORKER_QUEUES}, log {_show(worker.logfile)})")
    services.flower.wait_ready()
    console.print(f"Flower dashboard: [bold]{services.flower.url}[/]  user [bold]{FLOWER_USER}[/]"
                  f"  password [bold]{services.flower.password}[/]  (up while the demo runs; "
                  f"--keep leaves it up)")
    return db, time.monotonic() - started


def _summary(began: float, setup_s: float, sequential_s: float, submit_s: float,
             wall_s: float, outcomes: list[Outcome], agents: list[Outcome] | None,
             flower_seen: dict[str, int] | None) -> None:
    ok = sum(outcome.ok for outcome in outcomes)
    task_sum = sum(outcome.get("elapsed_s", 0) for outcome in outcomes)
    speedup = sequential_s / wall_s if wall_s else 0.0
    table = Table(title="Summary", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column()
    table.add_row("queries", f"{ok} succeeded, {len(outcomes) - ok} failed")
    table.add_row("before: one after another, in-process",
                  f"{sequential_s:.2f} s, the caller blocked all along")
    table.add_row(f"after: all at once on {len(WORKER_HOSTS)} workers",
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


def _print_kept(services: Services) -> None:
    names = ", ".join(w.name for w in services.workers)
    console.print(f"[bold]--keep:[/] {'Redis, ' if services.redis else ''}{names} and Flower "
                  f"keep running (Flower {services.flower.url}, user {FLOWER_USER}, password "
                  f"{services.flower.password}); stop them with `make demo-down`. To use them:")
    for name in ("TURBO_BROKER_URL", "TURBO_RESULT_BACKEND", "TURBO_DUCKDB_PATH",
                 "TURBO_RESULTS_DIR"):
        if name in os.environ:
            console.print(f"  export {name}={os.environ[name]}", soft_wrap=True)


def _terminate_raises_interrupt() -> None:
    """SIGTERM/SIGHUP take the same cleanup path as Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# --- small helpers ----------------------------------------------------------------------
def _show(path: Any) -> str:
    """A path relative to the working directory when it is below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _short(value: Any, limit: int) -> str:
    """One line of at most ``limit`` characters, safe to print as rich markup."""
    text = " ".join(str(value).split())
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _count_by(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m celeryapp.dev.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("TURBO_DEMO_DIR") or ROOT / "var" / "demo"),
                        help="state, logs, database and results (TURBO_DEMO_DIR; var/demo)")
    parser.add_argument("--rows", type=int,
                        default=int(os.environ.get("TURBO_DEMO_ROWS") or demo_data.DEFAULT_ROWS),
                        help="orders in the sample database (TURBO_DEMO_ROWS)")
    parser.add_argument("--keep", action="store_true",
                        help="leave Redis, workers and Flower running (stop: --down)")
    parser.add_argument("--down", action="store_true", help="stop what a demo left running")
    parser.add_argument("--fetch", nargs="+", metavar="[LABEL=]ID",
                        help="print stored task results and exit")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    args.state_dir = args.state_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.down:
        return down(args.state_dir)
    if args.fetch:
        return fetch(args.fetch)
    return run_demo(args.state_dir, args.rows, args.keep, os.environ.get("TURBO_DEMO_MODEL"))


if __name__ == "__main__":
    sys.exit(main())
