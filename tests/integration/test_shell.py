"""The ``turbo`` shell client end to end: real Redis, real workers, one process per call."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "turbo"
TURBO = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "celeryapp.shell.cli"]
WAIT = 60
ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
HEAVY = ("celery", "kombu", "redis", "pydantic", "pydantic_settings", "billiard", "vine")


def turbo(*args: str, env: dict | None = None, input: str | None = None,
          timeout: float = WAIT + 30) -> subprocess.CompletedProcess:
    return subprocess.run([*TURBO, *args], env={**os.environ, **(env or {})}, input=input,
                          capture_output=True, text=True, timeout=timeout)


def submit(*args: str, **kwargs) -> str:
    proc = turbo("submit", *args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    assert len(task_id) == 36 and proc.stdout.count("\n") == 1
    return task_id


def status_json(task_id: str) -> dict:
    proc = turbo("status", "--json", task_id)
    return json.loads(proc.stdout)[0]


def wait_state(task_id: str, states: tuple[str, ...], timeout: float = WAIT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entry = status_json(task_id)
        if entry["state"] in states:
            return entry
        assert time.monotonic() < deadline, f"{task_id} still {entry['state']}"
        time.sleep(0.2)


def unique_queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def test_query_submitted_by_the_cli_runs_and_its_result_is_read_elsewhere(shared_worker):
    task_id = submit("query", "SELECT count(*) AS n FROM orders WHERE id % 50 = ? "
                     "AND customer = ?", "--params", '[3, "c3"]')
    proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["columns"] == ["n"] and result["rows"] == [[100]]
    assert result["worker"] == shared_worker.name and result["task_id"] == task_id
    assert f"task {task_id}" in proc.stderr  # the progress line

    csv_out = turbo("result", task_id, "--format", "csv")
    assert csv_out.returncode == 0 and csv_out.stdout == "n\n100\n"
    table = turbo("result", task_id)
    assert table.returncode == 0 and table.stdout.split() == ["n", "100"]


def test_named_params_types_and_csv_quoting(shared_worker):
    task_id = submit("query", "SELECT $day::DATE AS d, 'a,b \"c\"' AS s, NULL AS z, [1, 2] AS xs, "
                     "count(*) AS n FROM orders WHERE day = $day::DATE",
                     "--param", '{"day": "2026-11-02"}')
    proc = turbo("result", task_id, "--wait", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows == [["d", "s", "z", "xs", "n"], ["2026-11-02", 'a,b "c"', "", "[1, 2]", "167"]]
    table = turbo("result", task_id).stdout.splitlines()
    assert table[0].split() == ["d", "s", "z", "xs", "n"]
    assert "NULL" in table[1] and "167" in table[1]


def test_spilled_result_says_where_the_rest_is(shared_worker):
    task_id = submit("query", "SELECT i FROM range(5000) t(i)", "--max-inline-rows", "10")
    proc = turbo("result", task_id, "--wait", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == ["i", "0", "1"]
    assert "of 5000 rows shown; the full result is in " in proc.stderr
    assert ".parquet" in proc.stderr
    status = turbo("status", task_id)
    assert "5000 rows (spilled to Parquet)" in status.stdout


def test_failed_query_exits_1_with_the_error_on_stderr(shared_worker):
    task_id = submit("query", "SELECT * FROM no_such_table")
    proc = turbo("result", task_id, "--wait")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "QueryError" in proc.stderr and "no_such_table" in proc.stderr
    status = turbo("status", task_id)
    assert status.returncode == 0
    line = next(line for line in status.stdout.splitlines() if line.startswith(task_id))
    assert "FAILURE" in line and "QueryError" in line and shared_worker.name in line
    as_json = turbo("result", task_id, "--format", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["result"]["exc_type"] == "QueryError"


def test_the_query_timeout_is_enforced(shared_worker):
    task_id = submit("query", ENDLESS, "--timeout", "1")
    proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 1
    assert "TaskTimeout" in proc.stderr and "timeout of 1s" in proc.stderr


def test_unknown_and_unfinished_tasks():
    unknown = str(uuid.uuid4())
    proc = turbo("status", unknown)
    assert "PENDING (unknown or not started)" in proc.stdout and proc.returncode == 1
    proc = turbo("result", unknown)
    assert proc.returncode == 1 and "PENDING (unknown or not started)" in proc.stderr
    proc = turbo("result", unknown, "--wait", "--timeout", "0.5")
    assert proc.returncode == 1 and "still PENDING (unknown or not started)" in proc.stderr
    queued = submit("query", "SELECT 1", "--queue", unique_queue())
    proc = turbo("status", queued)  # ours, so known, but no worker took it yet
    assert proc.returncode == 0 and "PENDING (unknown or not started)" in proc.stdout


def test_priorities_are_served_in_order(start_worker):
    queue = unique_queue()
    order = ["low", "normal", "high", "critical"]
    ids = {name: submit("query", f"SELECT '{name}' AS p", "--queue", queue, "--priority", name)
           for name in order}
    start_worker(queues=queue, concurrency=1)
    done = {}
    for name, task_id in ids.items():
        proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        done[name] = status_json(task_id)["date_done"]
    assert sorted(done, key=done.get) == ["critical", "high", "normal", "low"]


def test_status_of_a_running_query_then_cancel_ends_it_revoked(start_worker):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1)
    task_id = submit("query", ENDLESS, "--queue", queue, "--timeout", "300")
    running = wait_state(task_id, ("STARTED",))
    assert running["worker"] == worker.name
    time.sleep(1.2)
    line = next(line for line in turbo("status", task_id).stdout.splitlines()
                if line.startswith(task_id))
    assert "STARTED" in line and worker.name in line
    runtime = line.split()[4]  # ID KIND STATE WORKER RUNTIME ...
    assert runtime.endswith("s") and float(runtime.rstrip("s")) >= 1.0, line
    started = time.monotonic()
    proc = turbo("cancel", task_id)
    assert proc.returncode == 0, proc.stderr
    assert f"task {task_id}: REVOKED" in proc.stdout
    assert time.monotonic() - started < 15
    assert status_json(task_id)["state"] == "REVOKED"
    proc = turbo("result", task_id)
    assert proc.returncode == 1 and "cancelled (REVOKED)" in proc.stderr
    # the worker is free again
    after = submit("query", "SELECT 7 AS n", "--queue", queue)
    assert json.loads(turbo("result", after, "--wait", "--format", "json").stdout)["rows"] == [[7]]


def test_cancel_of_a_finished_task_says_so(shared_worker):
    task_id = submit("query", "SELECT 1")
    assert turbo("result", task_id, "--wait").returncode == 0
    proc = turbo("cancel", task_id)
    assert proc.returncode == 0 and "already finished: SUCCESS" in proc.stdout


def test_ls_and_status_list_what_was_submitted(start_worker):
    queue = unique_queue()
    first = submit("query", "SELECT 1", "--queue", queue)
    second = submit("agent", "hello", "--queue", queue)
    for argv in (["ls", "-n", "50"], ["status", "-n", "50"]):
        proc = turbo(*argv)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "KIND", "STATE"]
        ids = [line.split()[0] for line in lines[1:]]
        assert ids.index(second) < ids.index(first)  # newest first
    listed = turbo("ls", "-n", "1").stdout.splitlines()
    assert len(listed) == 2 and listed[1].startswith(second)


def test_agent_run_from_stdin_prompt(shared_worker, tmp_path):
    task_id = submit("agent", "-", "--model", "opus", "--max-turns", "2",
                     input="say hello\nacross lines")
    proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 0, proc.stderr
    assert "say hello\nacross lines" in proc.stdout and "(opus)" in proc.stdout
    assert "num_turns=" in proc.stderr
    as_json = json.loads(turbo("result", task_id, "--format", "json").stdout)
    assert as_json["is_error"] is False and as_json["worker"] == shared_worker.name
    csv_out = turbo("result", task_id, "--format", "csv")
    assert csv_out.returncode == 2 and "applies to query results" in csv_out.stderr
    line = next(line for line in turbo("status", task_id).stdout.splitlines()
                if line.startswith(task_id))
    assert "turbo.agent" in line and "SUCCESS" in line and "turns" in line


@pytest.mark.parametrize("argv, needle", [
    (["--permission-mode", "bogus"], "--permission-mode for profile 'claude' must be one of"),
    (["--max-turns", "0"], "--max-turns for profile 'claude' must be a whole number >= 1"),
    (["--profile", "nope"], "unknown agent profile 'nope'"),
    (["--profile", "gemini", "--max-turns", "3"], "--max-turns is not supported by agent "
                                                    "profile 'gemini'"),
    (["--resume", "yesterday"], "--resume for profile 'claude' must be a session id"),
])
def test_bad_agent_requests_are_refused_before_sending(argv, needle):
    proc = turbo("submit", "agent", "hi", "--queue", "nobody-listens", *argv)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing was sent


def test_turn_limit_result_shows_the_session_to_resume(shared_worker):
    task_id = submit("agent", "go [fake:max-turns]", "--max-turns", "2", "--keep-session")
    proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 1
    assert "AgentTurnLimit" in proc.stderr and "details: session_id " in proc.stderr
    details = json.loads(turbo("result", task_id, "--format", "json").stdout)["result"]
    message, facts = details["exc_message"]
    assert facts["num_turns"] == 3 and facts["cost_usd"] == 0.0123 and facts["session_id"]
    resumed = submit("agent", "go on", "--resume", facts["session_id"])
    proc = turbo("result", resumed, "--wait", "--format", "json", "--timeout", str(WAIT))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["session_id"] == facts["session_id"]


def test_agent_error_result_exits_1(shared_worker):
    task_id = submit("agent", "fail please [fake:error]", "--retries", "0")
    proc = turbo("result", task_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 1
    assert "AgentError" in proc.stderr or "is_error" in proc.stderr


def test_the_lean_path_imports_no_celery_redis_or_pydantic(shared_worker):
    script = textwrap.dedent(f"""
        import io, json, sys
        from contextlib import redirect_stdout, redirect_stderr
        from celeryapp.shell.cli import main
        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            assert main(["submit", "query", "SELECT 5 AS n", "--params", "[]"]) == 0
            task_id = out.getvalue().strip()
            assert main(["submit", "agent", "hi", "--queue", "nobody-listens"]) == 0
            assert main(["result", task_id, "--wait", "--format", "json"]) == 0
            for argv in (["status"], ["status", task_id], ["ls"], ["result", task_id],
                         ["result", task_id, "--format", "csv"]):
                assert main(argv) == 0, argv
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    imported = subprocess.run([sys.executable, "-X", "importtime", "-c",
                               "import celeryapp.shell.cli"], capture_output=True, text=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0]
             for line in imported.stderr.splitlines() if "|" in line}
    assert not names & set(HEAVY), names & set(HEAVY)


def test_submit_is_fast():
    """Not a benchmark (see bench/shell_wall.py): a guard against a heavy import."""
    queue = unique_queue()
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        submit("query", "SELECT 1", "--queue", queue)
        samples.append(time.perf_counter() - started)
    assert min(samples) < 0.25, samples  # importing Celery alone takes longer


# --- workflows ------------------------------------------------------------------------




def test_flow_submitted_by_the_cli_runs_and_reports_per_step(shared_worker, tmp_path):
    spec = tmp_path / "flow.yaml"
    spec.write_text(textwrap.dedent("""
        name: cli-flow
        steps:
          count:
            query: SELECT count(*) AS n FROM orders
          double:
            needs: count
            query: SELECT {{ count.rows[0][0] }} * 2 AS twice
          broken:
            needs: count
            query: SELECT * FROM missing_table
          after_broken:
            needs: broken
            query: SELECT 1
    """))
    flow_id = submit("flow", str(spec))
    proc = turbo("result", flow_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one step failed
    assert f"workflow {flow_id} cli-flow: failed" in proc.stdout
    rows = {line.split()[1]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "succeeded" in rows["count"] and "1 row" in rows["count"]
    assert "succeeded" in rows["double"]
    assert "failed" in rows["broken"] and "missing_table" in rows["broken"]
    assert "skipped" in rows["after_broken"]
    as_json = json.loads(turbo("result", flow_id, "--format", "json").stdout)
    assert as_json["state"] == "failed" and as_json["steps"]["double"]["state"] == "succeeded"
    status = turbo("status", flow_id)
    assert status.returncode == 0 and "flow:cli-flow" in status.stdout
    assert any(line.strip().startswith("├ count") for line in status.stdout.splitlines())
    ls = turbo("ls", "-n", "50").stdout
    assert flow_id in ls and "flow:cli-flow" in ls


def test_flow_from_stdin_and_bad_specs(shared_worker):
    flow_id = submit("flow", "-", input=json.dumps(
        {"name": "tiny", "steps": {"one": {"query": "SELECT 1 AS x"}}}))
    proc = turbo("result", flow_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout
    bad = turbo("submit", "flow", "-", input=json.dumps(
        {"name": "bad", "steps": {"a": {"query": "SELECT 1", "needs": ["ghost"]}}}))
    assert bad.returncode == 2 and "ghost" in bad.stderr and bad.stdout == ""
    missing = turbo("submit", "flow", "/nonexistent/flow.yaml")
    assert missing.returncode == 2 and "workflow file not found" in missing.stderr


def test_cancel_a_running_flow(start_worker):
    queue = unique_queue()
    start_worker(queues=f"{queue},default", concurrency=2)
    flow_id = submit("flow", "-", input=json.dumps({
        "name": "long", "defaults": {"queue": queue},
        "steps": {"spin": {"query": ENDLESS, "timeout": 300},
                  "later": {"needs": "spin", "query": "SELECT 1"}}}))
    deadline = time.monotonic() + WAIT
    while status_json(flow_id)["flow"]["steps"]["spin"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc = turbo("cancel", flow_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"workflow {flow_id}: cancelled (steps cancelled: spin, later)"
    proc = turbo("result", flow_id, "--wait", "--timeout", str(WAIT))
    assert proc.returncode == 1 and "cancelled" in proc.stdout
