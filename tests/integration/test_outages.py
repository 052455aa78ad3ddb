"""Redis going away and a worker cut off from it: nothing lost, nothing run twice.

Real Redis, real workers, the fake claude CLI logging each run's start and end. The
longer runs of these scenarios (default timeouts, a 30 s partition, 120 runs) are in
``make faults`` (faults/__main__.py); these are their fast versions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from celeryapp.core.holders import LAPSE_EXIT_CODE
from celeryapp.dev.localredis import LocalRedis
from celeryapp.dev.netcut import NetCut
from support.helpers import unique_queue, wait_for
from tasks.agent import run_agent

# Redis killed and cut off, leases running out: run alone (tests/suite.py)
pytestmark = pytest.mark.serial

WAIT = 120
TURBO = str(Path(sys.executable).parent / "turbo")


def events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def count(log: Path, event: str) -> int:
    return sum(1 for e in events(log) if e["event"] == event)


def test_a_worker_cut_off_from_redis_stops_before_its_runs_are_taken_over(
        start_worker, celery_app, redis_server, tmp_path):
    """alpha's traffic is black-holed (a partition) while it runs two agent runs: it stops
    itself once its lease is over (exit 75), before beta may take the runs over; each run
    then ends once, on beta."""
    queue = unique_queue()
    fast = {"TURBO_DEAD_WORKER_TIMEOUT": "4"}  # lease 3 s; others restore after >= 5 s
    netcut = NetCut(redis_server.host, redis_server.port).start()
    try:
        through = {name: netcut.url(os.environ[name])
                   for name in ("TURBO_BROKER_URL", "TURBO_RESULT_BACKEND")}
        alpha = start_worker(queues=queue, concurrency=2, env={**fast, **through})
        logs = [tmp_path / f"run{i}.log" for i in range(2)]
        handles = [run_agent.apply_async((f"cut {i} [fake:sleep=8] [fake:log={log}]",),
                                         {"timeout": 120}, queue=queue)
                   for i, log in enumerate(logs)]
        wait_for(lambda: all(events(log) for log in logs), 60, "both runs started on alpha")
        start_worker(queues=queue, concurrency=2, env=fast)  # beta, straight to Redis
        netcut.cut()
        assert alpha.process.wait(30) == LAPSE_EXIT_CODE, alpha.log_tail()
        assert "stopping it (exit 75) so that none runs twice" in alpha.log_tail(20000)
        for handle in handles:
            assert handle.get(timeout=WAIT)["is_error"] is False
        for log in logs:
            assert count(log, "start") == 2, events(log)  # alpha's, then beta's
            assert count(log, "end") == 1, events(log)  # alpha's was stopped before its end
    finally:
        netcut.heal()
        netcut.stop()


def test_redis_killed_under_load_loses_nothing_and_runs_nothing_twice(base_dir, tmp_path):
    """A Redis of its own (AOF, as in production) killed with -9 while two runs go and
    eight wait, started again two seconds later: the worker stays up, every run ends
    SUCCESS, none ends twice (runs that ended during the outage are not run again)."""
    from celeryapp.dev.localworker import WorkerProcess

    redis = LocalRedis(workdir=base_dir / f"redis-kill-{uuid.uuid4().hex[:6]}",
                       appendonly=True).start()
    env = {"TURBO_BROKER_URL": f"{redis.url}/0", "TURBO_RESULT_BACKEND": f"{redis.url}/1"}
    full_env = {**os.environ, **env}
    queue = unique_queue()
    worker = WorkerProcess(name=f"worker@k{uuid.uuid4().hex[:6]}", concurrency=2,
                           queues=queue, env=env,
                           logfile=base_dir / "logs" / f"redis-kill-{redis.port}.log")
    (base_dir / "logs").mkdir(exist_ok=True)
    try:
        worker.start()
        logs = [tmp_path / f"run{i}.log" for i in range(10)]
        ids = []
        for i, log in enumerate(logs):
            proc = subprocess.run([TURBO, "submit", "agent", "--queue", queue, "--timeout", "60",
                                   f"load {i} [fake:sleep=1] [fake:log={log}]"],
                                  env=full_env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            ids.append(proc.stdout.strip())
        wait_for(lambda: sum(bool(events(log)) for log in logs) >= 3, 60, "runs going")
        redis.kill()
        time.sleep(2)
        redis.start()
        for task_id in ids:
            proc = subprocess.run([TURBO, "result", task_id, "--wait", "--timeout", str(WAIT),
                                   "--format", "json"], env=full_env, capture_output=True,
                                  text=True, timeout=WAIT + 30)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr + worker.log_tail()
        assert worker.process.poll() is None, worker.log_tail()  # it reconnected, no exit
        assert [count(log, "end") for log in logs] == [1] * len(logs), \
            [events(log) for log in logs]
    finally:
        worker.stop()
        redis.stop()


READ_ACROSS_A_RESTART = """
import os, sys, tempfile, pathlib
from celeryapp.dev.localredis import LocalRedis
redis = LocalRedis(workdir=pathlib.Path(tempfile.mkdtemp(dir=sys.argv[1]))).start()
os.environ["TURBO_BROKER_URL"] = f"{redis.url}/0"
os.environ["TURBO_RESULT_BACKEND"] = f"{redis.url}/1"
from celeryapp import app
try:
    print(app.backend.get_task_meta("t1", cache=False)["status"])
    redis.stop()
    redis.start()
    print(app.backend.get_task_meta("t1", cache=False)["status"])
finally:
    redis.stop()
"""


def test_a_client_reads_across_a_redis_restart_without_an_error(base_dir):
    """A long-lived client (a caller's process, Flower, turbo's app path) whose pooled
    backend connection predates a Redis restart: its next read reconnects instead of
    raising ConnectionError once."""
    proc = subprocess.run([sys.executable, "-c", READ_ACROSS_A_RESTART, str(base_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["PENDING", "PENDING"], proc.stdout
