"""turbo.agent through Redis and real workers, with the fake claude CLI
(tests/support/fakes/claude)."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from celery.exceptions import TaskRevokedError

from support.helpers import gone, unique_queue, wait_for
from tasks.agent import run_agent
from tasks.errors import (
    AgentAuthError,
    AgentError,
    AgentNotFound,
    AgentRateLimited,
    AgentTurnLimit,
    InvalidRequest,
    TaskTimeout,
)

WAIT = 60


def read_pid(path: Path, timeout: float = 30.0) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), timeout,
                          f"{path} written"))


# --- success ---------------------------------------------------------------------------
def test_success_result_fields(shared_worker):
    async_result = run_agent.delay("summarise the orders table", model="fake-sonnet")
    result = async_result.get(timeout=WAIT)
    assert result["result"] == "fake claude (fake-sonnet): summarise the orders table"
    assert result["is_error"] is False
    assert result["subtype"] == "success"
    assert result["cost_usd"] == 0.0123
    assert len(result["session_id"]) == 36
    assert result["num_turns"] == 1
    assert result["exit_code"] == 0
    assert result["duration_s"] > 0
    assert result["usage"]["input_tokens"] == 4
    assert result["profile"] == "claude"
    assert result["task_id"] == async_result.id
    assert result["worker"] == shared_worker.name
    assert result["attempts"] == 1
    assert result["api_calls"] == result["api_calls_total"] == 1
    assert result["cost_usd_total"] == 0.0123
    assert gone(result["pid"])


def test_hostile_prompt_and_options_arrive_intact(shared_worker):
    prompt = """$(rm -rf ~); "x" 'y' `id` && echo $HOME > /tmp/owned [fake:echo-args]"""
    result = run_agent.delay(prompt, model="opus", max_turns=4,
                             allowed_tools=["Read", "Bash(ls:*)"], permission_mode="plan",
                             append_system_prompt="Answer in 'one' line; $(no)").get(timeout=WAIT)
    assert json.loads(result["result"]) == [
        "-p", "--output-format", "stream-json", "--verbose", "--model", "opus",
        "--max-turns", "4", "--allowedTools", "Read,Bash(ls:*)", "--permission-mode", "plan",
        "--append-system-prompt", "Answer in 'one' line; $(no)", "--no-session-persistence"]
    assert run_agent.delay(prompt.replace("echo-args", "stdin-or-argv")).get(
        timeout=WAIT)["result"] == "stdin"  # the prompt: never in argv, where ps shows it
    assert not Path("/tmp/owned").exists()


def test_cwd_is_honoured(shared_worker, tmp_path):
    result = run_agent.delay("where am I [fake:cwd]", cwd=str(tmp_path)).get(timeout=WAIT)
    assert result["result"] == str(tmp_path)


# --- refused before submitting -----------------------------------------------------------
@pytest.mark.parametrize("args,kwargs,needle", [
    (("hi",), {"profile": "nope"}, "unknown agent profile 'nope'; known profiles: claude, codex"),
    (("hi", "codex"), {"max_turns": 3}, "'max_turns' is not supported by agent profile 'codex'"),
    (("hi",), {"max_turns": -1}, "max_turns"),
    (("hi",), {"max_turns": 0}, "must be a whole number >= 1"),
    (("hi",), {"permission_mode": "bogus"}, "must be one of acceptEdits, auto"),
    (("hi",), {"model": ["a"]}, "'model' for profile 'claude' must be a non-empty string"),
    (("hi",), {"allowed_tools": [3]}, "list of tool names"),
    (("hi",), {"resume": "not-a-session"}, "a session id"),
    (("",), {}, "prompt must be a non-empty string"),
    (("hi",), {"timeout": 10 ** 6}, "exceeds the maximum of 3600s \\(TURBO_AGENT_MAX_TIMEOUT\\)"),
    (("hi",), {"retries": -1}, "retries"),
])
def test_bad_requests_are_refused_before_submitting(args, kwargs, needle):
    with pytest.raises(InvalidRequest, match=needle):
        run_agent.delay(*args, **kwargs)


def test_bad_cwd_fails_on_the_worker(shared_worker, celery_app, tmp_path):
    with pytest.raises(InvalidRequest, match="not a directory"):
        run_agent.delay("hi", cwd=str(tmp_path / "missing")).get(timeout=WAIT)
    refused = run_agent.delay("hi", cwd="/etc")  # outside TURBO_AGENT_CWD_ROOTS
    with pytest.raises(InvalidRequest, match="TURBO_AGENT_CWD_ROOTS"):
        refused.get(timeout=WAIT)
    assert_not_retried(celery_app, shared_worker, refused)


def test_the_worker_refuses_what_its_operator_did_not_allow(start_worker, celery_app):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1, env={
        "TURBO_AGENT_PERMISSION_MODES": "default,plan", "TURBO_AGENT_ALLOWED_TOOLS": "Read,Grep"})
    for kwargs, needle in [({"permission_mode": "acceptEdits"}, "TURBO_AGENT_PERMISSION_MODES"),
                           ({"allowed_tools": ["Read", "Bash"]}, "tool 'Bash' is not allowed")]:
        refused = run_agent.apply_async(("hi",), kwargs, queue=queue)
        with pytest.raises(InvalidRequest, match=needle):
            refused.get(timeout=WAIT)
        assert_not_retried(celery_app, worker, refused)
    ok = run_agent.apply_async(("hi",), {"permission_mode": "plan", "allowed_tools": ["Read"]},
                               queue=queue)
    assert ok.get(timeout=WAIT)["is_error"] is False


# --- permanent failures -------------------------------------------------------------------
def assert_not_retried(celery_app, worker, async_result):
    meta = celery_app.backend.get_task_meta(async_result.id)
    assert meta["status"] == "FAILURE"
    assert meta["retries"] == 0
    assert f"{async_result.id}] retry" not in worker.log().lower()


def test_agent_error_is_not_retried_and_shows_stderr(shared_worker, celery_app):
    async_result = run_agent.delay("[fake:error] [fake:stderr=the_disk_is_on_fire]")
    with pytest.raises(AgentError) as raised:
        async_result.get(timeout=WAIT)
    message, details = str(raised.value), raised.value.details
    assert "exit code 1" in message and "the disk is on fire" in message
    assert details["subtype"] == "error_during_execution" and details["attempts"] == 1
    assert details["session_id"] and details["cost_usd"] == 0.0123  # what was paid for
    assert_not_retried(celery_app, shared_worker, async_result)


@pytest.mark.parametrize("prompt,error,needle", [
    ("[fake:garbage]", AgentError, "printed no result event"),
    ("[fake:max-turns]", AgentTurnLimit, "stopped at its turn limit"),
    ("[fake:crash]", AgentError, "RuntimeError: fake claude crashed on purpose"),
    ("[fake:unauthorized]", AgentAuthError, "Invalid API key"),
])
def test_malformed_or_failed_runs_are_not_retried(shared_worker, celery_app, prompt, error,
                                                  needle):
    async_result = run_agent.delay(prompt)
    with pytest.raises(error, match=needle):
        async_result.get(timeout=WAIT)
    assert_not_retried(celery_app, shared_worker, async_result)


def test_missing_executable(start_worker, celery_app):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1, env={"TURBO_CLAUDE_BIN": "/nonexistent"})
    async_result = run_agent.delay("hi", queue=queue)
    with pytest.raises(AgentNotFound, match="'/nonexistent'.*TURBO_CLAUDE_BIN"):
        async_result.get(timeout=WAIT)
    assert_not_retried(celery_app, worker, async_result)


# --- rate limits -------------------------------------------------------------------------
def test_rate_limit_is_retried_then_succeeds(shared_worker, celery_app, tmp_path):
    async_result = run_agent.delay(f"[fake:rate-limit-until=2 state={tmp_path / 'calls'}]")
    result = async_result.get(timeout=WAIT)
    # two failed attempts of 2 API calls each (the CLI retried once: TURBO_AGENT_CLI_MAX_RETRIES=1)
    assert result["attempts"] == 3 and result["api_calls_total"] == 2 * 2 + 1
    assert (tmp_path / "calls").read_text() == "3"
    assert celery_app.backend.get_task_meta(async_result.id)["retries"] == 2


def test_rate_limit_past_the_budget_fails(shared_worker, celery_app, tmp_path):
    async_result = run_agent.delay(f"[fake:rate-limit-until=99 state={tmp_path / 'calls'}]",
                                   retries=1)
    with pytest.raises(AgentRateLimited, match="gave up after 2 attempts") as raised:
        async_result.get(timeout=WAIT)
    assert raised.value.details["api_error_status"] == 429
    assert raised.value.details["attempts"] == 2
    assert (tmp_path / "calls").read_text() == "2"
    assert celery_app.backend.get_task_meta(async_result.id)["retries"] == 1


def test_rate_limit_retries_that_would_outlast_the_timeout_are_not_made(shared_worker,
                                                                      celery_app, tmp_path):
    """``timeout`` covers every attempt: a rate limit that stays ends the run within it
    (plus slack), not after 50 retries, and the error says why it gave up."""
    started = time.monotonic()
    async_result = run_agent.delay(f"[fake:rate-limit-until=999 state={tmp_path / 'calls'}]",
                                   retries=50, timeout=4)
    with pytest.raises(AgentRateLimited) as raised:
        async_result.get(timeout=WAIT)
    assert time.monotonic() - started < 4 + 15
    details = raised.value.details
    assert 2 <= details["attempts"] < 51
    assert details["gave_up"] == "another attempt would not fit in the timeout of 4s"
    assert (f"(gave up after {details['attempts']} attempts and "
            f"{details['api_calls_total']} API calls in ") in str(raised.value)
    assert celery_app.backend.get_task_meta(async_result.id)["retries"] == details["attempts"] - 1


def test_overloaded_is_a_rate_limit(shared_worker):
    with pytest.raises(AgentRateLimited, match="529"):
        run_agent.delay("[fake:overloaded]", retries=0).get(timeout=WAIT)


# --- deadlines, revoke and process groups ------------------------------------------------
def test_timeout_stops_the_run_and_frees_the_worker(start_worker):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=1)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 2s") as raised:
        run_agent.delay("[fake:sleep=60]", timeout=2, queue=queue).get(timeout=WAIT)
    assert raised.value.details["session_id"]  # the run cut short still names its session
    assert time.monotonic() - started < 20
    started = time.monotonic()
    assert run_agent.delay("next", queue=queue).get(timeout=WAIT)["result"].endswith("next")
    assert time.monotonic() - started < 15


def test_timeout_kills_grandchildren(shared_worker, tmp_path):
    pidfile, leader = tmp_path / "grandchild.pid", tmp_path / "leader.pid"
    with pytest.raises(TaskTimeout):
        run_agent.delay(f"[fake:grandchild={pidfile}] [fake:pidfile={leader}]",
                        timeout=4).get(timeout=WAIT)
    for path in (pidfile, leader):
        pid = read_pid(path, 1)
        wait_for(lambda pid=pid: gone(pid), 10, f"pid {pid} from {path.name} gone")


def test_revoke_with_sigusr1_kills_the_process_group(start_worker, celery_app, tmp_path):
    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1)
    pidfile, leader = tmp_path / "grandchild.pid", tmp_path / "leader.pid"
    async_result = run_agent.delay(f"[fake:grandchild={pidfile}] [fake:pidfile={leader}]",
                                   queue=queue)
    grandchild, agent = read_pid(pidfile), read_pid(leader)
    assert not gone(grandchild) and not gone(agent)
    async_result.revoke(terminate=True, signal="SIGUSR1")
    for pid in (grandchild, agent):
        wait_for(lambda pid=pid: gone(pid), 20, f"pid {pid} gone after revoke")
    with pytest.raises(TaskRevokedError):  # a revoke stays a revoke, not a timeout
        async_result.get(timeout=WAIT)
    assert celery_app.backend.get_task_meta(async_result.id)["status"] == "REVOKED"
    assert worker.process.poll() is None  # the worker survived
    assert run_agent.delay("after revoke", queue=queue).get(timeout=WAIT)["attempts"] == 1


# --- per-host slots ---------------------------------------------------------------------
def test_host_concurrency_limit(start_worker, celery_app, tmp_path):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=3,
                 env={"TURBO_AGENT_CONCURRENCY": "1", "TURBO_HOST": f"h-{uuid.uuid4().hex[:6]}"})
    log = tmp_path / "runs.log"
    results = [run_agent.delay(f"run {n} [fake:sleep=2] [fake:log={log}]", queue=queue)
               for n in range(3)]
    outcomes = [r.get(timeout=WAIT) for r in results]
    assert [o["result"].split(" [")[0][-5:] for o in outcomes] == ["run 0", "run 1", "run 2"]
    assert all(o["attempts"] == 1 for o in outcomes)  # slot waits spend no retry budget
    assert sum(o["slot_waits"] for o in outcomes) >= 1
    for r in results:
        assert celery_app.backend.get_task_meta(r.id)["retries"] == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    runs: dict[int, dict] = {}
    for event in events:
        runs.setdefault(event["pid"], {})[event["event"]] = event["t"]
    spans = sorted((run["start"], run["end"]) for run in runs.values())
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"agent runs overlap: {spans}"


def test_agent_dies_with_a_killed_worker(start_worker, tmp_path):
    """SIGKILL of the whole worker (OOM, host trouble): the CLI must not run on unseen,
    since the task will be redelivered to another worker after the visibility timeout."""
    import os
    import signal

    queue = unique_queue()
    worker = start_worker(queues=queue, concurrency=1)
    leader = tmp_path / "leader.pid"
    run_agent.delay(f"[fake:sleep=120] [fake:pidfile={leader}]", queue=queue, timeout=300)
    agent = read_pid(leader)
    os.killpg(worker.pid, signal.SIGKILL)
    wait_for(lambda: gone(agent), 20, "the agent CLI to die with its worker")
