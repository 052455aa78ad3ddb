"""``python -m celeryapp.monitoring.health``: liveness through the worker's host queue, stale
STARTED tasks of dead workers. Real workers, real CLI subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

from celery.result import AsyncResult

from celeryapp.monitoring import health
from tasks.query import run_query

ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
WAIT = 60


def health_cli(*args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "celeryapp.monitoring.health", *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def wait_for_state(result: AsyncResult, state: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"{result.id} still {result.state}, wanted {state}"
        time.sleep(0.1)


def new_host() -> str:
    return f"h{uuid.uuid4().hex[:6]}"


def test_live_succeeds_for_a_consuming_worker(start_worker, celery_app):
    host = new_host()
    worker = start_worker(host, queues=f"host.{host}", concurrency=1)
    done, _ = health_cli("live", "--worker", worker.name, "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{worker.name} live: ping ran in pool pid" in done.stdout
    # the ping leaves nothing behind: no result meta, no reply key
    client = celery_app.backend.client
    metas = [key for key in client.scan_iter("celery-task-meta-*")
             if json.loads(client.get(key) or "{}").get("name") == health.PING_TASK]
    assert metas == [] and list(client.scan_iter("turbo:health:*")) == []


def test_live_fails_within_the_timeout_for_a_stopped_worker(start_worker):
    host = new_host()
    worker = start_worker(host, queues=f"host.{host}", concurrency=1)
    worker.stop()
    done, took = health_cli("live", "--worker", f"worker@{host}", "--timeout", "5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not answer" in done.stderr
    assert took < 5 + 10  # the timeout plus the interpreter and Celery start-up


def test_live_counts_a_fully_busy_worker_as_live_unless_strict(start_worker):
    host = new_host()
    worker = start_worker(host, queues=f"host.{host}", concurrency=1)
    slow = run_query.delay(ENDLESS, host=host, timeout=600)
    wait_for_state(slow, "STARTED")
    try:
        done, _ = health_cli("live", "--worker", worker.name, "--timeout", "4")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "live but busy: all 1 pool slots" in done.stdout
        done, _ = health_cli("live", "--worker", worker.name, "--timeout", "3", "--strict")
        assert done.returncode == 1 and "not run within 3s" in done.stderr
    finally:
        slow.revoke(terminate=True, signal="SIGUSR1")
    wait_for_state(slow, "REVOKED")


def test_stale_finds_the_task_of_a_killed_worker_and_not_healthy_ones(start_worker, celery_app):
    dead_host, alive_host = new_host(), new_host()
    doomed = start_worker(dead_host, queues=f"host.{dead_host}", concurrency=1)
    healthy = start_worker(alive_host, queues=f"host.{alive_host}", concurrency=1)
    lost = run_query.delay(ENDLESS, host=dead_host, timeout=600)
    fine = run_query.delay(ENDLESS, host=alive_host, timeout=600)
    wait_for_state(lost, "STARTED")
    wait_for_state(fine, "STARTED")
    try:
        os.killpg(doomed.pid, signal.SIGKILL)  # main process and pool child at once
        doomed.process.wait(10)
        assert lost.state == "STARTED"  # nobody is left to say otherwise

        done, _ = health_cli("stale", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        stale = {task["task_id"]: task for task in json.loads(done.stdout)}
        assert lost.id in stale and fine.id not in stale
        assert stale[lost.id]["worker"] == doomed.name
        assert stale[lost.id]["name"] == "turbo.query"
        assert 0 <= stale[lost.id]["started_ago_s"] < 60

        done, _ = health_cli("stale")
        assert f"{lost.id} turbo.query STARTED on {doomed.name} (not answering)" in done.stdout
        done, _ = health_cli("stale", "--older-than", "3600")
        assert done.returncode == 0 and "no stale tasks" in done.stdout, done.stdout
    finally:
        fine.revoke(terminate=True, signal="SIGUSR1")
        lost.forget()  # leave no stale meta for the rest of the session
    wait_for_state(fine, "REVOKED")
    assert healthy.process.poll() is None


def test_started_meta_parsing():
    meta = {"status": "STARTED", "task_id": "abc", "name": "turbo.query",
            "worker": "worker@x", "result": {"pid": 1, "hostname": "worker@x"}}
    task = health._started(b"celery-task-meta-abc", json.dumps(meta), 3_500_000,
                           "celery-task-meta-", 3600)
    assert task == health.StaleTask("abc", "turbo.query", "worker@x", 100.0)
    meta.pop("worker")
    assert health._started("celery-task-meta-abc", json.dumps(meta), -1, "celery-task-meta-",
                           3600).worker == "worker@x"
    assert health._started("k", json.dumps({"status": "SUCCESS"}), 1, "", 1) is None
    assert health._started("k", "not json", 1, "", 1) is None
    assert health.worker_name("alpha") == ("worker@alpha", "alpha")
    assert health.worker_name("worker@beta") == ("worker@beta", "beta")
