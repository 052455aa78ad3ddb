"""The processes the demo runs: a private Redis, two hosts' workers and Flower.

Each host runs what ``turbo-worker`` and ``turbo-worker --io`` run in production:
``worker@<host>`` (prefork: local DuckDB queries) and ``io@<host>`` (threads:
agent runs, remote-engine queries, notices, workflow bookkeeping).

Each is recorded in the state file the moment it starts (:mod:`.state`), so
``--down`` can stop it even if the demo itself is killed.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celery.states import READY_STATES

from celeryapp.config import reset_settings
from celeryapp.core.names import CPU_ROLE, IO_ROLE, ROLE_QUEUES, host_queue, worker_node
from celeryapp.dev.demo import report
from celeryapp.dev.demo.state import StateFile, stop_recorded
from celeryapp.dev.localflower import FlowerProcess
from celeryapp.dev.localredis import LocalRedis, free_port
from celeryapp.dev.localworker import WorkerProcess

WORKER_HOSTS = ("alpha", "beta")
WORKER_CONCURRENCY = 2  # prefork processes of worker@<host>
IO_CONCURRENCY = 16  # threads of io@<host>
POOLS = {CPU_ROLE: ("prefork", WORKER_CONCURRENCY), IO_ROLE: ("threads", IO_CONCURRENCY)}
FLOWER_USER = "demo"


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
        report.stopping(names)
        if self.flower:
            _attempt(self.flower.stop)
        for worker in self.workers:  # warm shutdown of both at once
            if worker.process and worker.process.poll() is None:
                worker.process.terminate()
        for worker in self.workers:
            _attempt(worker.stop)
        if self.redis:
            _attempt(self.redis.stop)
        report.leftovers(stop_recorded(self.state, quiet=True))
        report.stopped(time.monotonic() - started)


def _attempt(step: Callable[[], None]) -> None:
    """Run one shutdown step; a failure must not keep the next ones from running."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - reported, and the sweep in Services.stop follows
        report.step_failed(step.__qualname__, exc)


def start_broker(services: Services, state_dir: Path) -> str:
    """Use TURBO_BROKER_URL when set; otherwise start a private redis-server."""
    given = os.environ.get("TURBO_BROKER_URL")
    if given:
        report.broker_given(given)
        return given
    redis = LocalRedis(workdir=state_dir / "redis", password=secrets.token_hex(16))
    services.redis = redis
    redis.start()
    services.state.track("redis", redis.process.pid, redis.process.args)
    os.environ["TURBO_BROKER_URL"] = f"{redis.url}/0"
    os.environ["TURBO_RESULT_BACKEND"] = f"{redis.url}/1"
    report.broker_started(redis)
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
    os.environ.setdefault("TURBO_AGENT_SCRATCH_DIR", str(state_dir / "agent-work"))
    reset_settings()


def worker_queues(host: str, role: str) -> str:
    """What ``turbo-worker [--io]`` consumes on ``host``: the role's queues and its own
    host queue."""
    return ",".join((*ROLE_QUEUES[role], host_queue(host, role)))


def start_workers(services: Services, logs: Path) -> None:
    """Start every worker without waiting: they boot while the database is built.
    Per host a prefork worker and an io (threads) worker, as in production."""
    for role in (CPU_ROLE, IO_ROLE):
        pool, concurrency = POOLS[role]
        for host in WORKER_HOSTS:
            name = worker_node(host, role)
            logfile = logs / f"{host}{'' if role == CPU_ROLE else '-io'}.log"
            worker = WorkerProcess(name=name, queues=worker_queues(host, role),
                                   concurrency=concurrency, pool=pool, logfile=logfile)
            services.workers.append(worker)
            worker.start()
            services.state.track(worker.name, worker.pid, worker.process.args)


def start_flower(services: Services, logs: Path) -> None:
    """Flower through the project's launcher (login required), on a free loopback port;
    the password goes through the environment, not argv."""
    port = free_port()
    services.flower = FlowerProcess(port=port, user=FLOWER_USER,
                                    password=secrets.token_urlsafe(12),
                                    logfile=logs / "flower.log",
                                    extra_args=(f"--port={port}",)).launch()
    services.state.track("flower", services.flower.process.pid, services.flower.process.args)


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
    return report.count_by(task.get("state", "?") for task_id, task in flower_tasks.items()
                           if task_id in task_ids)
