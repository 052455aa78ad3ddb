"""A dead worker's tasks start again in seconds; a live worker's are never taken from it.

Each worker beats in Redis and names itself beside each message it holds
(celeryapp/core/holders.py); the visibility timeout (71 minutes by default) is only a
backstop. Real workers, real Redis, ``kill -9`` of a whole worker."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from support.helpers import gone, unique_queue, wait_for
from tasks.agent import run_agent

# kills and heartbeat timeouts: run alone (tests/suite.py)
pytestmark = pytest.mark.serial

WAIT = 90


def events(log) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def starts(log) -> list[dict]:
    return [event for event in events(log) if event["event"] == "start"]


# limits that make a 6 s visibility timeout (3 + 1 + 1 + margin 1), swept every second
SHORT_LIMITS = {"TURBO_QUERY_MAX_TIMEOUT": "3", "TURBO_QUERY_TIMEOUT": "3",
                "TURBO_AGENT_MAX_TIMEOUT": "3", "TURBO_AGENT_TIMEOUT": "3",
                "TURBO_TIME_LIMIT_GRACE": "1", "TURBO_VISIBILITY_MARGIN": "1",
                "TURBO_UNACKED_RESTORE_INTERVAL": "1"}


def run_on_first_worker(start_worker, queue, log, seconds: float, timeout: float = 300,
                        env: dict | None = None):
    """A one-slot worker on ``queue`` and an agent run of ``seconds`` on it, started:
    (the worker, the run's handle, its start event)."""
    worker = start_worker(queues=queue, concurrency=1, env=env)
    handle = run_agent.apply_async((f"[fake:sleep={seconds:g}] [fake:log={log}]",),
                                   {"timeout": timeout}, queue=queue)
    first = wait_for(lambda: starts(log), 30, "the run on the first worker")[0]
    return worker, handle, first


def test_a_killed_workers_task_starts_again_on_a_live_worker_within_seconds(start_worker,
                                                                         celery_app,
                                                                         tmp_path):
    queue = unique_queue()
    log = tmp_path / "runs.log"
    # (the default, 15 s, is measured across hosts in tests/system/test_multihost.py)
    fast = {"TURBO_DEAD_WORKER_TIMEOUT": "6"}
    alpha, handle, first = run_on_first_worker(start_worker, queue, log, 6, env=fast)
    beta = start_worker(queues=queue, concurrency=1, env=fast)
    os.killpg(alpha.pid, signal.SIGKILL)  # the whole worker: power loss, OOM kill
    killed = time.time()
    wait_for(lambda: gone(first["pid"]), 20, "alpha's agent to die with it")
    second = wait_for(lambda: starts(log)[1:], WAIT, "the run again on beta")[0]
    resumed = second["t"] - killed
    assert resumed < 1.5 * 6 + 6, f"the task started again {resumed:.1f}s after its worker died"
    result = handle.get(timeout=WAIT)
    assert result["worker"] == beta.name and result["is_error"] is False


def test_a_countdown_past_the_visibility_timeout_runs_once(start_worker, tmp_path):
    """A worker holds a countdown message unacked until it is due; the visibility
    timeout used to hand it to a second worker meanwhile (both ran it)."""
    queue = unique_queue()
    log = tmp_path / "runs.log"
    for _ in range(2):
        start_worker(queues=queue, concurrency=1, env=SHORT_LIMITS)
    handle = run_agent.apply_async((f"once [fake:log={log}]",), {"timeout": 3}, queue=queue,
                                   countdown=10)
    assert handle.get(timeout=WAIT)["is_error"] is False
    time.sleep(4)  # room for a second delivery to show
    assert len(starts(log)) == 1, starts(log)


def test_a_run_longer_than_another_workers_visibility_timeout_runs_once(start_worker,
                                                                        tmp_path):
    """alpha (default limits) runs a 12 s agent run; beta's limits give it a 6 s visibility
    timeout and a sweep every second. Its sweep finds the record older than that, but
    alpha is alive: the run is not handed to beta (it used to be: both ran it)."""
    queue = unique_queue()
    log = tmp_path / "runs.log"
    alpha, handle, _ = run_on_first_worker(start_worker, queue, log, 12, timeout=60)
    start_worker(queues=queue, concurrency=1, env=SHORT_LIMITS)
    result = handle.get(timeout=WAIT)
    assert result["worker"] == alpha.name and result["is_error"] is False
    time.sleep(3)  # room for a second delivery to show
    assert len(starts(log)) == 1, starts(log)


def test_a_worker_started_after_the_only_one_died_takes_its_task_back(start_worker, tmp_path):
    """One host, one worker, killed as a whole (a reboot): the next worker started there
    puts the dead one's message back and runs it - nobody else was alive to do it."""
    queue = unique_queue()
    log = tmp_path / "runs.log"
    fast = {"TURBO_DEAD_WORKER_TIMEOUT": "4"}
    first, handle, _ = run_on_first_worker(start_worker, queue, log, 5, env=fast)
    os.killpg(first.pid, signal.SIGKILL)
    killed = time.time()
    again = start_worker(queues=queue, concurrency=1, env=fast)  # "after the reboot"
    second = wait_for(lambda: starts(log)[1:], WAIT, "the run again on the next worker")[0]
    # its holder waits one timeout of its own beats, then sees the dead key twice
    assert second["t"] - killed < 3 * 4 + 10, second["t"] - killed
    result = handle.get(timeout=WAIT)
    assert result["worker"] == again.name and result["is_error"] is False


def test_a_task_revoked_while_its_worker_dies_stays_revoked(start_worker, celery_app,
                                                             tmp_path):
    """Revoked (without terminate) while alpha runs it, then alpha dies: beta puts the
    message back and, having seen the revoke, does not run it; it ends REVOKED."""
    queue = unique_queue()
    log = tmp_path / "runs.log"
    fast = {"TURBO_DEAD_WORKER_TIMEOUT": "4"}
    alpha, handle, _ = run_on_first_worker(start_worker, queue, log, 30, env=fast)
    start_worker(queues=queue, concurrency=1, env=fast)  # beta, which hears the revoke
    handle.revoke()
    time.sleep(1)  # the broadcast reaches both
    os.killpg(alpha.pid, signal.SIGKILL)
    wait_for(lambda: handle.state == "REVOKED", WAIT, "the task to end REVOKED")
    time.sleep(6)  # room for a wrong second start to show
    assert len(starts(log)) == 1, starts(log)
    assert handle.state == "REVOKED"
