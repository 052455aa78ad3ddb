"""Custom inspect/control commands on real workers, through the real ``celery`` CLI:
running_queries, running_agents and cancel_task (REVOKED, slot free again)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.result import AsyncResult

from celeryapp.worker import running
from tasks.agent import run_agent
from tasks.query import run_query

ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
WAIT = 60


def celery_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "celeryapp", *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def inspect_json(command: str, worker: str) -> list[dict]:
    done = celery_cli("inspect", command, "--json", "-d", worker, "-t", "5")
    assert done.returncode == 0, done.stderr + done.stdout
    replies = json.loads(done.stdout.strip().splitlines()[-1])
    return replies[worker]


def wait_for(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def wait_for_state(result: AsyncResult, state: str, timeout: float = WAIT) -> None:
    wait_for(lambda: result.state == state, timeout, f"{result.id} to be {state}")


def cancel(task_id: str, worker: str) -> dict:
    done = celery_cli("control", "cancel_task", task_id, "--json", "-d", worker, "-t", "5")
    assert done.returncode == 0, done.stderr + done.stdout
    replies = json.loads(done.stdout.strip().splitlines()[-1])  # [{worker: reply}]
    return next(reply[worker] for reply in replies if worker in reply)


def host_worker(start_worker, concurrency: int = 1):
    host = f"i{uuid.uuid4().hex[:6]}"
    return host, start_worker(host, queues=f"host.{host},host.{host}.io", concurrency=concurrency)


def test_running_query_is_listed_and_cancel_task_revokes_it(start_worker):
    host, worker = host_worker(start_worker)
    slow = run_query.delay(ENDLESS, host=host, timeout=600)
    wait_for_state(slow, "STARTED")
    entries = wait_for(lambda: inspect_json("running_queries", worker.name),
                       what="the query in running_queries")
    assert [entry["task_id"] for entry in entries] == [slow.id]
    entry = entries[0]
    assert entry["sql"] == ENDLESS  # 70 chars: shown whole
    assert entry["engine"] == "duckdb"
    assert entry["statement_id"] is None  # DuckDB has none
    assert entry["elapsed_s"] >= 0
    assert entry["pid"] != worker.pid  # a pool child, not the main process
    assert inspect_json("running_agents", worker.name) == []

    cancelled_at = time.monotonic()
    reply = cancel(slow.id, worker.name)
    assert reply["ok"]["state"] == "terminating", reply
    assert reply["ok"]["kind"] == "query"
    wait_for_state(slow, "REVOKED", timeout=20)
    # one pool process: the next task runs only because the statement really stopped
    assert run_query.delay("SELECT 9", host=host).get(timeout=WAIT)["rows"] == [[9]]
    assert time.monotonic() - cancelled_at < 20
    assert slow.state == "REVOKED"
    assert inspect_json("running_queries", worker.name) == []
    assert f"{slow.id}] revoked after" in worker.log()


def test_running_agent_shows_the_cli_pid_and_cancel_kills_its_group(start_worker):
    host, worker = host_worker(start_worker)
    run = run_agent.delay("[fake:sleep=30] summarise " + "x" * 400, host=host, timeout=120)
    entries = wait_for(lambda: [e for e in inspect_json("running_agents", worker.name)
                                if e["pid"]], what="the agent run with its CLI pid")
    entry = entries[0]
    assert entry["task_id"] == run.id
    assert entry["profile"] == "claude"
    assert entry["prompt"].startswith("[fake:sleep=30] summarise xxx")
    assert len(entry["prompt"]) == running.PREVIEW_CHARS
    cmdline = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"fakes/claude") for part in cmdline), cmdline
    assert os.getpgid(entry["pid"]) == entry["pid"]  # its own process group
    assert entry["worker_pid"] != entry["pid"]

    cancelled_at = time.monotonic()
    assert cancel(run.id, worker.name)["ok"]["kind"] == "agent"
    wait_for_state(run, "REVOKED", timeout=20)
    wait_for(lambda: not Path(f"/proc/{entry['pid']}").exists(), 10, "the CLI to be gone")
    assert run_query.delay("SELECT 10", host=host).get(timeout=WAIT)["rows"] == [[10]]
    assert time.monotonic() - cancelled_at < 20
    assert inspect_json("running_agents", worker.name) == []


def test_cancel_task_of_an_unknown_task_is_an_error_reply(start_worker):
    _, worker = host_worker(start_worker)
    reply = cancel("no-such-task", worker.name)
    assert "not running on" in reply["error"]


def test_cancel_task_before_start_discards_the_waiting_task(start_worker):
    host, worker = host_worker(start_worker)
    slow = run_query.delay(ENDLESS, host=host, timeout=600)
    wait_for_state(slow, "STARTED")
    waiting = run_query.delay("SELECT 11", host=host)
    # prefetch 1 x concurrency 1: the second message stays in Redis until the slot frees,
    # so the worker does not know it yet
    assert "error" in cancel(waiting.id, worker.name)
    assert cancel(slow.id, worker.name)["ok"]["state"] == "terminating"
    assert waiting.get(timeout=WAIT)["rows"] == [[11]]
    assert slow.state == "REVOKED"


# --- the registry itself (no worker) ---------------------------------------------------
def test_registry_entries_skip_and_remove_stale_files(tmp_path, monkeypatch):
    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    worker = "worker@unit"
    path = running.register("query", "t1", worker=worker, sql="SELECT 1", engine="duckdb")
    running.note(statement_id="s-1")
    [entry] = running.entries(worker, "query")  # this process is its own "parent"
    assert entry["statement_id"] == "s-1" and entry["worker_pid"] == os.getpid()
    assert list(running.entries(worker, "agent")) == []
    # an entry of a process that is not our child is stale: skipped and removed
    dead = json.loads(path.read_text())
    dead.update(task_id="t2", worker_pid=2 ** 22 + 12345)
    (path.parent / "t2.json").write_text(json.dumps(dead))
    assert [e["task_id"] for e in running.entries(worker)] == ["t1"]
    assert not (path.parent / "t2.json").exists()
    running.unregister("t1")
    assert not path.exists()
    running.note(statement_id="ignored")  # no current task: a no-op
    assert running.current_task_id() is None


def test_preview_is_one_line_and_capped():
    assert running.preview("SELECT 1\n  FROM t") == "SELECT 1 FROM t"
    long = running.preview("x" * 500)
    assert len(long) == 200 and long.endswith("\u2026")
    assert running.preview(None) is None


def test_statement_id_is_polled_for_engines_that_have_one(tmp_path, monkeypatch):
    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    monkeypatch.setattr(running, "STATEMENT_POLL_S", 0.01)
    from tasks.engines.base import Session

    class Fake(Session):
        ident = None

        def execute(self, sql, params):  # pragma: no cover - not called
            raise NotImplementedError

        def cancel(self):  # pragma: no cover
            pass

        def close(self):  # pragma: no cover
            pass

        @property
        def statement_id(self):
            return self.ident

    class Plain(Fake.__base__):
        execute, cancel, close = Fake.execute, Fake.cancel, Fake.close

    assert running._has_statement_ids(Fake()) and not running._has_statement_ids(Plain())
    path = running.register("query", "t3", worker="worker@unit2")
    session = Fake()
    running.on_session(session)
    session.ident = "01ef-statement"
    wait_for(lambda: json.loads(path.read_text()).get("statement_id") == "01ef-statement", 5,
             "the statement id")
    running.unregister("t3")


@pytest.mark.parametrize("command", ["running_queries", "running_agents", "cancel_task"])
def test_the_cli_knows_the_commands(command):
    done = celery_cli("inspect" if command.startswith("running") else "control", "--list")
    assert command in done.stdout, done.stdout + done.stderr


def test_commands_prefer_what_the_task_code_reported(tmp_path, monkeypatch):
    """The hooks proposed for tasks/query.py (on_session) and the agent runner
    (note(pid=...)): reported values win over the /proc fallback."""
    from types import SimpleNamespace

    from celeryapp.worker import control as commands

    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    state = SimpleNamespace(consumer=SimpleNamespace(hostname="worker@hooks"))
    running.register("agent", "a1", worker="worker@hooks", profile="codex",
                     prompt=running.preview("do it"), pid=None)
    running.note(pid=424242)  # what supervisor.run_process would report after Popen
    [agent] = commands.running_agents(state)
    assert agent["pid"] == 424242 and agent["profile"] == "codex" and agent["prompt"] == "do it"
    assert agent["worker_pid"] == os.getpid() and agent["task_id"] == "a1"
    running.unregister("a1")
    assert commands.running_agents(state) == []
    running.register("query", "q1", worker="worker@hooks", engine="databricks", sql="SELECT 1",
                     statement_id=None, pid=os.getpid())
    running.note(statement_id="01ef-abc")
    [query] = commands.running_queries(state)
    assert query["statement_id"] == "01ef-abc" and query["engine"] == "databricks"
    assert set(query) == {"task_id", "engine", "statement_id", "elapsed_s", "sql", "pid",
                          "started"}
    running.unregister("q1")


def test_clear_keeps_live_namesakes(tmp_path, monkeypatch):
    """Two workers of one name on one machine (a demo and a test run) keep their entries."""
    monkeypatch.setattr(running, "base_dir", lambda: tmp_path)
    ours = running.register("query", "mine", worker="worker@same")
    other = running.worker_dir("worker@same", 1)  # pid 1 lives: another worker's folder
    other.mkdir()
    (other / "theirs.json").write_text("{}")
    dead = running.worker_dir("worker@same", 2 ** 22 + 4321)
    dead_other = running.worker_dir("worker@gone", 2 ** 22 + 4322)
    for folder in (dead, dead_other):
        folder.mkdir()
        (folder / "old.json").write_text("{}")
    running.clear("worker@same")
    assert not ours.exists() and not dead.exists() and not dead_other.exists()
    assert (other / "theirs.json").exists()
    running.unregister("mine")
