"""N slow tasks on N slots run side by side, spread over two workers (hosts)."""
from __future__ import annotations

import time
import uuid

import pytest

from tasks.agent import run_agent

# a makespan bound: run alone (tests/suite.py)
pytestmark = pytest.mark.serial

N = 8
ONE_TASK_S = 1.0


def test_slow_tasks_run_in_parallel_across_two_workers(start_worker):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    env = {"TURBO_AGENT_CONCURRENCY": str(N)}
    alpha = start_worker(f"alpha-{queue}", queues=queue, concurrency=N // 2, env=env)
    beta = start_worker(f"beta-{queue}", queues=queue, concurrency=N // 2, env=env)
    started = time.monotonic()
    pending = [run_agent.delay(f"task {i} [fake:sleep={ONE_TASK_S}]", queue=queue, timeout=60)
               for i in range(N)]
    results = [p.get(timeout=60) for p in pending]
    wall = time.monotonic() - started
    assert all(not r["is_error"] for r in results)
    # sequential would take N x 1 s = 8 s; generous bound for a loaded 2-core machine
    assert wall < N * ONE_TASK_S / 2, f"{N} x {ONE_TASK_S}s tasks took {wall:.1f}s"
    assert {r["worker"] for r in results} == {alpha.name, beta.name}
