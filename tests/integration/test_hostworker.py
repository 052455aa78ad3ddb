"""The per-host worker command and host pinning."""
from __future__ import annotations

import uuid

import pytest

from celeryapp.config import Settings
from celeryapp.worker.host import worker_argv
from tasks.errors import InvalidRequest
from tasks.query import run_query


def test_worker_command_names_the_host_and_adds_its_queue(tmp_path):
    argv = worker_argv(Settings(host="alpha", worker_concurrency=8, worker_queues="queries,agents",
                                worker_statedb=tmp_path / "alpha.db"))
    assert argv[argv.index("-n") + 1] == "worker@alpha"
    assert argv[argv.index("-Q") + 1] == "queries,agents,host.alpha"
    assert argv[argv.index("-c") + 1] == "8"
    assert f"--statedb={tmp_path / 'alpha.db'}" in argv


def test_bad_host_name_is_refused():
    with pytest.raises(ValueError, match="TURBO_HOST must be"):
        Settings(host="al pha")


def test_host_pinned_task_runs_only_on_that_host(start_worker):
    host = f"h{uuid.uuid4().hex[:6]}"
    pinned = start_worker(host, queues=f"host.{host}", concurrency=1)
    result = run_query.delay("SELECT 1", host=host).get(timeout=60)
    assert result["worker"] == pinned.name
    with pytest.raises(InvalidRequest, match="queue or host"):
        run_query.delay("SELECT 1", host=host, queue="queries")


def test_critical_task_pinned_to_a_host_runs(start_worker):
    """Priority 0 lives in the list named after the bare queue: the host queue's name
    must survive kombu's split on its priority separator."""
    host = f"h{uuid.uuid4().hex[:6]}"
    pinned = start_worker(host, queues=f"host.{host}", concurrency=1)
    result = run_query.delay("SELECT 1", host=host, priority="critical").get(timeout=60)
    assert result["worker"] == pinned.name


def test_queue_names_with_the_priority_separator_are_refused():
    with pytest.raises(InvalidRequest, match="queue name must be"):
        run_query.delay("SELECT 1", queue="team:a")
