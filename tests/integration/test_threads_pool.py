"""The io worker's pool (``-P threads``): every way to stop a task works there as on prefork.

Celery's soft/hard time limits do not exist on the threads pool and
``revoke(terminate=True)`` cannot signal a thread; the runners' own deadlines and
the task's stop event (celeryapp/worker/control.py, celeryapp/worker/running.py)
must stop the statement at the engine or kill the agent's process group, and
leave the task REVOKED (or failed with TaskTimeout) exactly as on prefork.
Real workers on ``-P threads``, real DuckDB statements, the fake claude CLI.
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
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult

from celeryapp import flows
from celeryapp.core.names import host_queue
from celeryapp.dev.localworker import WorkerProcess
from support.helpers import gone, run_checked, unique_queue, wait_for
from tasks.agent import run_agent
from tasks.errors import TaskTimeout
from tasks.query import run_query

# 10^12 rows: runs until cancelled (real work at the engine, no sleep)
ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
WAIT = 60
STOPPED_WITHIN_S = 15  # far below any hard limit: the slot came back because of the stop


def threads_worker(start_worker, queues: str | None = None, concurrency: int = 1, **env):
    queue = unique_queue()
    worker = start_worker(queues=queues or queue, concurrency=concurrency, pool="threads",
                          env={"TURBO_HOST": f"t-{uuid.uuid4().hex[:6]}", **env})
    worker.queue = queue
    return worker


def wait_for_state(result: AsyncResult, state: str, timeout: float = WAIT) -> None:
    wait_for(lambda: result.state == state, timeout, f"{result.id} to be {state}", 0.05)


def read_pid(path: Path, timeout: float = 30.0) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), timeout,
                        f"{path} written"))


def celery_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "celeryapp", *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)


def inspect(celery_app, command: str, worker) -> list[dict]:
    """A custom inspect command's reply of one worker (celeryapp/worker/control.py)."""
    replies = celery_app.control.inspect(destination=[worker.name], timeout=5)._request(command)
    return (replies or {}).get(worker.name) or []


def assert_revoked(celery_app, result: AsyncResult) -> None:
    wait_for_state(result, "REVOKED", 20)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=5)
    time.sleep(0.5)  # the task has returned by now: nothing overwrote the state
    assert celery_app.backend.get_task_meta(result.id)["status"] == "REVOKED"


def start_running_query(worker) -> AsyncResult:
    slow = run_query.delay(ENDLESS, timeout=600, queue=worker.queue)
    wait_for_state(slow, "STARTED")
    time.sleep(0.5)  # let the statement get going inside DuckDB
    return slow


def assert_slot_free(worker, since: float, value: int = 8) -> None:
    """One slot: the next query runs only because the statement really stopped."""
    assert run_query.delay(f"SELECT {value}", queue=worker.queue).get(
        timeout=WAIT)["rows"] == [[value]]
    assert time.monotonic() - since < STOPPED_WITHIN_S


# --- queries ---------------------------------------------------------------------------------
def test_query_timeout_cancels_the_statement(start_worker):
    worker = threads_worker(start_worker)
    started = time.monotonic()
    slow = run_query.delay(ENDLESS, timeout=1, queue=worker.queue)
    quick = run_query.delay("SELECT 7", queue=worker.queue)
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 1s and was cancelled"):
        slow.get(timeout=WAIT)
    assert quick.get(timeout=WAIT)["rows"] == [[7]]
    assert time.monotonic() - started < STOPPED_WITHIN_S


@pytest.mark.parametrize("signal", ["SIGUSR1", "SIGTERM", "SIGKILL"])
def test_revoke_terminate_stops_a_running_statement(start_worker, celery_app, signal):
    """Any terminate signal: a thread cannot be signalled, so every one means 'stop at
    the source' on this pool; the worker itself survives."""
    worker = threads_worker(start_worker)
    slow = start_running_query(worker)
    revoked_at = time.monotonic()
    slow.revoke(terminate=True, signal=signal)
    assert_slot_free(worker, revoked_at)
    assert_revoked(celery_app, slow)
    log = worker.log()
    assert f"{slow.id}] revoked after" in log and "cancelled at the source" in log
    assert worker.process.poll() is None


def test_cancel_task_command_stops_a_running_statement(start_worker, celery_app):
    worker = threads_worker(start_worker)
    slow = start_running_query(worker)
    [entry] = wait_for(lambda: inspect(celery_app, "running_queries", worker), 20,
                       "the query in running_queries")
    assert entry["task_id"] == slow.id and entry["pid"] == worker.pid  # threads: one process
    cancelled_at = time.monotonic()
    replies = celery_app.control.broadcast("cancel_task", arguments={"task_id": slow.id},
                                           destination=[worker.name], reply=True, timeout=5)
    reply = replies[0][worker.name]["ok"]
    assert reply["state"] == "terminating" and reply["stop"] == "event", reply
    assert reply["kind"] == "query" and reply["signal"] is None
    assert_slot_free(worker, cancelled_at, 9)
    assert_revoked(celery_app, slow)


def test_turbo_cancel_stops_a_running_statement(start_worker, celery_app):
    worker = threads_worker(start_worker)
    slow = start_running_query(worker)
    cancelled_at = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "celeryapp.shell.cli", "cancel", slow.id],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"task {slow.id}: REVOKED" in done.stdout, done.stdout
    assert_slot_free(worker, cancelled_at, 10)
    assert_revoked(celery_app, slow)


def test_workflow_cancel_stops_a_running_step(start_worker, celery_app):
    worker = threads_worker(start_worker)
    flow_id = flows.submit({"name": "cancel-threads", "defaults": {"queue": worker.queue},
                            "steps": {"long": {"query": ENDLESS, "timeout": 600},
                                      "next": {"needs": ["long"], "query": "SELECT 1"}}})
    wait_for(lambda: flows.get_state(flow_id)["steps"]["long"]["state"] == "running", WAIT,
             "the step to run", 0.05)
    time.sleep(0.5)
    cancelled_at = time.monotonic()
    state = flows.cancel(flow_id)
    assert state["state"] == "cancelled"
    assert {step["state"] for step in state["steps"].values()} == {"cancelled"}
    assert_slot_free(worker, cancelled_at, 5)
    assert_revoked(celery_app, AsyncResult(state["steps"]["long"]["task_id"]))


# --- agent runs ------------------------------------------------------------------------------
def grandchild_prompt(tmp_path: Path, sleep: int = 300) -> tuple[str, Path, Path]:
    pidfile, leader = tmp_path / "grandchild.pid", tmp_path / "leader.pid"
    return f"[fake:grandchild={pidfile}] [fake:pidfile={leader}]", pidfile, leader


def assert_group_gone(*pidfiles: Path) -> None:
    for path in pidfiles:
        pid = read_pid(path, 5)
        wait_for(lambda pid=pid: gone(pid), 10, f"pid {pid} ({path.name}) gone")


def test_agent_timeout_kills_the_process_group(start_worker, tmp_path):
    worker = threads_worker(start_worker)
    prompt, grandchild, leader = grandchild_prompt(tmp_path)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 2s; its process group"):
        run_agent.delay(prompt, timeout=2, queue=worker.queue).get(timeout=WAIT)
    assert_group_gone(grandchild, leader)
    assert run_agent.delay("next", queue=worker.queue).get(timeout=WAIT)["result"].endswith("next")
    assert time.monotonic() - started < STOPPED_WITHIN_S


def test_agent_revoke_kills_the_process_group(start_worker, celery_app, tmp_path):
    worker = threads_worker(start_worker)
    prompt, grandchild, leader = grandchild_prompt(tmp_path)
    run = run_agent.delay(prompt, timeout=600, queue=worker.queue)
    read_pid(grandchild)
    assert not gone(read_pid(leader))
    revoked_at = time.monotonic()
    run.revoke(terminate=True, signal="SIGUSR1")
    assert_group_gone(grandchild, leader)
    assert_revoked(celery_app, run)
    assert run_agent.delay("after", queue=worker.queue).get(timeout=WAIT)["attempts"] == 1
    assert time.monotonic() - revoked_at < STOPPED_WITHIN_S
    assert worker.process.poll() is None


def test_agent_cancel_task_kills_the_process_group(start_worker, celery_app, tmp_path):
    worker = threads_worker(start_worker)
    prompt, grandchild, leader = grandchild_prompt(tmp_path)
    run = run_agent.delay(prompt, timeout=600, queue=worker.queue)
    read_pid(grandchild)
    [entry] = wait_for(lambda: [e for e in inspect(celery_app, "running_agents", worker)
                                if e["pid"]], 20, "the agent with its CLI pid")
    assert entry["pid"] == read_pid(leader) and entry["worker_pid"] == worker.pid
    replies = celery_app.control.broadcast("cancel_task", arguments={"task_id": run.id},
                                           destination=[worker.name], reply=True, timeout=5)
    assert replies[0][worker.name]["ok"]["kind"] == "agent"
    assert_group_gone(grandchild, leader)
    assert_revoked(celery_app, run)


def test_eight_agent_runs_run_side_by_side_on_one_threads_worker(start_worker):
    worker = threads_worker(start_worker, concurrency=8, TURBO_AGENT_CONCURRENCY="8")
    started = time.monotonic()
    runs = [run_agent.delay(f"run {i} [fake:sleep=1]", queue=worker.queue, timeout=60)
            for i in range(8)]
    results = [run.get(timeout=WAIT) for run in runs]
    wall = time.monotonic() - started
    assert all(not result["is_error"] for result in results)
    assert {result["worker"] for result in results} == {worker.name}
    assert wall < 4, f"8 x 1 s agent runs on 8 threads took {wall:.1f}s"


# --- the io worker of a host: routing and liveness -----------------------------------------
@pytest.fixture
def io_worker(celery_app, base_dir):
    """``io@<host>`` as turbo-worker --io runs it: threads, its own host queue."""
    host = f"io{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(name=f"io@{host}", queues=host_queue(host, "io"), concurrency=4,
                           pool="threads", env={"TURBO_HOST": host},
                           logfile=base_dir / "logs" / f"io-{host}.log")
    (base_dir / "logs").mkdir(exist_ok=True)
    worker.start(celery_app)
    worker.host = host
    yield worker
    worker.stop()


def test_host_pinned_agent_runs_on_the_io_worker_and_it_is_live(io_worker, celery_app):
    result = run_agent.delay("pinned", host=io_worker.host).get(timeout=WAIT)
    assert result["worker"] == io_worker.name
    # a pinned Databricks query goes there too (it fails: no warehouse configured here)
    failed = run_query.delay("SELECT 1", engine="databricks", host=io_worker.host)
    with pytest.raises(Exception, match="DATABRICKS"):
        failed.get(timeout=WAIT)
    assert celery_app.backend.get_task_meta(failed.id)["worker"] == io_worker.name
    done = subprocess.run([sys.executable, "-m", "celeryapp.monitoring.health", "live",
                           "--worker", io_worker.name, "--timeout", "20"],
                          env=dict(os.environ), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{io_worker.name} live: ping ran in pool pid {io_worker.pid}" in done.stdout
    stats = json.loads(celery_cli("inspect", "stats", "--json", "-d", io_worker.name,
                                  "-t", "5").stdout.strip().splitlines()[-1])
    assert stats[io_worker.name]["pool"]["implementation"].endswith("thread:TaskPool")


# --- the pieces, without a worker ---------------------------------------------------------
def test_a_cancel_before_the_task_registers_is_kept_for_it(tmp_path, monkeypatch):
    """Revoked between Celery's accept and task_prerun: the task starts already stopped."""
    from celeryapp.worker import running

    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    assert running.cancel("early-1") is False
    running.register("query", "early-1", worker="worker@unit")
    try:
        assert running.stop_event().is_set()
        assert running.cancel("early-1") is True
    finally:
        running.unregister("early-1")
    assert running.stop_event("early-1") is None
    running.register("query", "late-1", worker="worker@unit")
    try:
        assert not running.stop_event().is_set()  # nobody cancelled this one
        assert running.cancel("never-here", early=False) is False
    finally:
        running.unregister("late-1")


def test_in_memory_registry_of_a_threads_worker(tmp_path, monkeypatch):
    from celeryapp.worker import running

    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    monkeypatch.setattr(running, "_in_memory", True)
    assert running.register("agent", "mem-1", worker="worker@unit", pid=None) is None
    running.note(pid=4242)
    try:
        [entry] = running.entries("worker@unit", "agent")
        assert entry["pid"] == 4242 and entry["worker_pid"] == os.getpid()
        assert list(tmp_path.iterdir()) == []  # no files
    finally:
        running.unregister("mem-1")
    assert list(running.entries("worker@unit")) == []


def test_run_with_deadline_stops_on_the_event_and_keeps_outcomes(tmp_path):
    import threading

    from tasks.deadline import Cancelled, run_with_deadline

    stop, cancelled = threading.Event(), threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="stopped on request"):
        run_with_deadline(lambda: cancelled.wait(30), cancelled.set, 30, "work", stop=stop)
    assert cancelled.is_set() and time.monotonic() - started < 5
    with pytest.raises(Cancelled, match="before it started"):
        run_with_deadline(lambda: 1, lambda: None, 30, "work", stop=stop)
    assert run_with_deadline(lambda: 7, lambda: None, 30, "work",
                             stop=threading.Event()) == 7
    blocked = threading.Event()
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 0.2s"):
        run_with_deadline(lambda: blocked.wait(30), blocked.set, 0.2, "work",
                          stop=threading.Event())


def test_a_cli_that_cannot_start_is_not_found(tmp_path):
    """The CLI is started through ``setpriv --pdeathsig`` (no preexec_fn: vfork): an exec
    failure behind it is still AgentNotFound, as Popen's own error was."""
    from tasks.agents.sandbox import Caps
    from tasks.errors import AgentNotFound

    script = tmp_path / "claude"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(AgentNotFound, match="could not be started.*TURBO_CLAUDE_BIN"):
        run_checked("claude", "hi", {}, executable=str(script), timeout=10,
                    caps=Caps(scratch_dir=tmp_path / "runs"))
