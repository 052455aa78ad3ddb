"""``make demo``: the whole system on one machine, from nothing to results.

It starts a private Redis (unless TURBO_BROKER_URL is set), two real workers
(worker@alpha, worker@beta) and Flower, builds a sample DuckDB database, runs
analysis queries one after another in-process (the "before") and then all at
once on the workers, fetches the results from a separate process, runs a few
real agent CLI runs when ``claude`` is installed, and stops everything again.

Every process it starts is recorded in ``<state dir>/state.json`` the moment it
starts (celeryapp/dev/demo/state.py), so ``python -m celeryapp.dev.demo --down``
(``make demo-down``) can stop leftovers of a run that was killed. Options and variables:

  --state-dir / TURBO_DEMO_DIR   where state, logs, database, results go (var/demo)
  --rows / TURBO_DEMO_ROWS       orders in the sample database (10,000,000)
  --keep                         leave Redis, workers and Flower running afterwards
  TURBO_DEMO_MODEL               model for the agent runs (default: the CLI's own)
  --fetch [LABEL=]ID ...         print stored results (what the demo runs in a subprocess)
  --down                         stop whatever a demo left running
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from celeryapp.dev.demo import data as demo_data
from celeryapp.dev.demo import report
from celeryapp.dev.demo.fetch import fetch, fetch_elsewhere
from celeryapp.dev.demo.services import (
    WORKER_HOSTS,
    Services,
    configure_environment,
    flower_task_count,
    start_broker,
    start_flower,
    start_workers,
)
from celeryapp.dev.demo.state import StateFile, running_demo, stop_recorded
from celeryapp.dev.demo.workload import run_agents, run_queries

ROOT = Path(__file__).resolve().parents[3]  # the repository: var/demo is below it


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.down:
        return down(args.state_dir)
    if args.fetch:
        return fetch(args.fetch)
    return run_demo(args.state_dir, args.rows, args.keep, os.environ.get("TURBO_DEMO_MODEL"))


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


def down(state_dir: Path) -> int:
    """``--down``: stop what a demo left running and forget it."""
    state = StateFile(state_dir)
    if state.load() is None:
        report.nothing_to_stop(state.path)
        return 0
    report.stopped_recorded(stop_recorded(state))
    state.clear()
    report.state_removed(state.path, state_dir)
    return 0


def prepare(state: StateFile) -> bool:
    """Stop leftovers of an earlier, killed run; refuse while another demo runs."""
    data = state.load()
    if data is None:
        return True
    other = running_demo(data)
    if other:
        report.another_demo_running(other, state.path)
        return False
    report.earlier_run(state.path, stop_recorded(state, quiet=True))
    state.clear()
    return True


def run_demo(state_dir: Path, rows: int, keep: bool, model: str | None) -> int:
    """The whole demo; with ``keep`` and no failure, what it started stays up."""
    began = time.monotonic()
    state = StateFile(state_dir)
    report.section("[bold]Agent Turbo demo")
    if not prepare(state):
        return 2
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state.begin(state_dir=str(state_dir))
    services = Services(state)
    failed = True
    _terminate_raises_interrupt()
    try:
        code = demo_steps(services, state_dir, logs, rows, model, began)
        failed = code != 0
        return code
    except KeyboardInterrupt:
        report.interrupted()
        return 130
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:  # setup failures
        report.demo_failed(exc, logs)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        if keep and not failed:
            report.kept(services)
        else:
            services.stop()
            state.clear()
        report.finished(time.monotonic() - began)


def demo_steps(services: Services, state_dir: Path, logs: Path, rows: int,
               model: str | None, began: float) -> int:
    """Start everything, queries before and after, fetch elsewhere, agent runs, summary."""
    db, setup_s = start_everything(services, state_dir, logs, rows)

    queries = demo_data.QUERIES
    report.section("Before: one query after another in this process")
    before = demo_data.run_sequentially(db, queries)
    sequential_s = sum(seconds for seconds, _ in before.values())
    report.sequential(len(queries), sequential_s)

    report.section(f"After: all {len(queries)} at once on worker@alpha and worker@beta")
    outcomes, submit_s, wall_s = run_queries(queries)
    report.queries(outcomes, before)
    fetch_code = fetch_elsewhere(outcomes)

    report.section("Agent runs")
    agents = run_agents(outcomes, model)

    this_run = {outcome.task_id for outcome in outcomes + (agents or [])}
    report.summary(began, setup_s, sequential_s, submit_s, wall_s, outcomes, agents,
                   flower_task_count(services, this_run), workers=len(WORKER_HOSTS))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed or fetch_code:
        report.queries_failed(len(failed), logs)
        return 1
    return 0


def start_everything(services: Services, state_dir: Path, logs: Path,
                     rows: int) -> tuple[Path, float]:
    """Redis, then workers and Flower booting while the database is built; all ready after.

    Returns the database path and the seconds spent after Redis was up.
    """
    report.setup(state_dir)
    start_broker(services, state_dir)
    configure_environment(state_dir)
    from celeryapp import app  # built now, from the environment set above

    started = time.monotonic()
    start_workers(services, logs)
    start_flower(services, logs)
    db = state_dir / "sample.duckdb"
    built, build_s = demo_data.ensure_database(db, rows)
    report.database(db, rows, built, build_s)
    for worker in services.workers:
        worker.wait_ready(app)
        report.worker_ready(worker)
    services.flower.wait_ready()
    report.flower_ready(services.flower)
    return db, time.monotonic() - started


def _terminate_raises_interrupt() -> None:
    """SIGTERM/SIGHUP take the same cleanup path as Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


if __name__ == "__main__":
    sys.exit(main())
