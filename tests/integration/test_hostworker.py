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
    assert argv[argv.index("-P") + 1] == "prefork"
    assert f"--statedb={tmp_path / 'alpha.db'}" in argv


def test_the_two_roles_of_a_host(tmp_path, monkeypatch):
    """turbo-worker: worker@<host>, prefork, local queries; turbo-worker --io: io@<host>,
    threads, the I/O-bound queues; each with its own host queue and state file."""
    settings = Settings(host="alpha", results_dir=tmp_path / "results")
    cpu, io = worker_argv(settings, "cpu"), worker_argv(settings, "io")
    assert cpu == worker_argv(settings)  # the default role
    assert cpu[cpu.index("-Q") + 1] == "queries,host.alpha"
    assert (io[io.index("-n") + 1], io[io.index("-P") + 1], io[io.index("-c") + 1]) == (
        "io@alpha", "threads", "64")
    assert io[io.index("-Q") + 1] == "agents,default,warehouse,host.alpha.io"
    assert f"--statedb={tmp_path / 'state' / 'worker-alpha.db'}" in cpu
    assert f"--statedb={tmp_path / 'state' / 'io-alpha.db'}" in io
    # a statedb given for the prefork worker only: the io worker keeps a file of its own
    shared = Settings(host="alpha", worker_statedb=tmp_path / "state.db")
    assert f"--statedb={tmp_path / 'state-io.db'}" in worker_argv(shared, "io")
    by_setting = worker_argv(Settings(host="alpha", worker_role="io"))
    assert by_setting[by_setting.index("-n") + 1] == "io@alpha"
    with pytest.raises(ValueError, match="TURBO_WORKER_ROLE"):
        Settings(worker_role="gpu")
    from celeryapp.worker import host as launcher

    monkeypatch.setattr(launcher, "get_settings", lambda: settings)
    for flags, node in ((["--io"], "io@alpha"), (["--role", "io"], "io@alpha"),
                        ([], "worker@alpha"), (["--cpu"], "worker@alpha")):
        printed = []
        monkeypatch.setattr("builtins.print", printed.append)
        launcher.main([*flags, "--dry-run"])
        assert f" -n {node} " in printed[0], (flags, printed)


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


def test_host_pinned_work_goes_to_the_worker_of_its_kind(start_worker, broker_client):
    """A DuckDB query pinned to a host goes to its prefork worker's queue, an agent run
    or a Databricks query to its io worker's (tests/integration/test_threads_pool.py runs
    them there)."""
    from tasks.agent import run_agent

    host = f"h{uuid.uuid4().hex[:6]}"  # nobody consumes its queues: the messages wait
    query = run_query.delay("SELECT 1", host=host)
    remote = run_query.delay("SELECT 1", engine="databricks", host=host)
    agent = run_agent.delay("hi", host=host)
    try:
        waiting = {queue: b"".join(broker_client.lrange(f"{queue}:6", 0, -1))
                   for queue in (f"host.{host}", f"host.{host}.io")}
        assert query.id.encode() in waiting[f"host.{host}"]
        assert remote.id.encode() in waiting[f"host.{host}.io"]
        assert agent.id.encode() in waiting[f"host.{host}.io"]
    finally:
        for queue in (f"host.{host}", f"host.{host}.io"):
            for key in broker_client.scan_iter(match=f"{queue}*"):
                broker_client.delete(key)


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
