"""turbo.agent with the REAL claude CLI (npm, pinned in tests/support/agent_clis.py) on a
real worker, against the Messages API stand-in (tests/support/fakes/anthropic_api.py):
what the caller gets for each outcome, how many attempts and API calls it cost, and
how long. The CLI's own retries are bounded (TURBO_AGENT_CLI_MAX_RETRIES=1), the
task's backoff is short (conftest: TURBO_RETRY_BACKOFF=0.2)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from celeryapp.dev.localredis import free_port
from support.agent_clis import CLAUDE_QUIET_ENV, cli_or_skip_reason
from support.fakes.anthropic_api import start_anthropic_api
from support.helpers import unique_queue
from tasks.agent import run_agent
from tasks.errors import (
    AgentAuthError,
    AgentRateLimited,
    AgentTurnLimit,
    AgentUnavailable,
    InvalidRequest,
    TaskTimeout,
)

WAIT = 120
CLAUDE, WHY_NOT = cli_or_skip_reason("claude")
pytestmark = pytest.mark.skipif(CLAUDE is None, reason=f"the real claude CLI: {WHY_NOT}")


@pytest.fixture(scope="module")
def api():
    with start_anthropic_api() as server:
        yield server


@pytest.fixture(scope="module")
def claude_worker(api, tmp_path_factory, celery_app, base_dir):
    """A worker whose claude is the real one, talking to the stand-in; its own HOME
    (sessions), scratch directory and a secret the agent must not see."""
    from celeryapp.dev.localworker import WorkerProcess

    home = tmp_path_factory.mktemp("claude-home")
    scratch = tmp_path_factory.mktemp("agent-runs")
    queue = unique_queue()
    host = f"rc{uuid.uuid4().hex[:6]}"
    env = {**CLAUDE_QUIET_ENV, "TURBO_CLAUDE_BIN": str(CLAUDE), "ANTHROPIC_BASE_URL": api.url,
           "HOME": str(home), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1",
           "TURBO_AGENT_SCRATCH_DIR": str(scratch), "TURBO_AGENT_CLI_MAX_RETRIES": "1",
           "TURBO_HOST": host, "DATABRICKS_TOKEN": "dapi-must-not-leak"}
    (base_dir / "logs").mkdir(exist_ok=True)
    worker = WorkerProcess(name=f"worker@{host}", queues=f"{queue},host.{host}.io",
                           concurrency=4, pool="threads", env=env,
                           logfile=base_dir / "logs" / f"real-claude-{host}.log")
    worker.start(celery_app)
    worker.home, worker.scratch, worker.queue, worker.host = home, scratch, queue, host
    yield worker
    worker.stop()


def key() -> str:
    return uuid.uuid4().hex[:10]


def run(worker, prompt: str, **kwargs):
    return run_agent.apply_async((prompt,), kwargs, queue=worker.queue)


def test_success_keeps_answer_cost_usage_and_leaves_nothing_behind(claude_worker, api):
    k = key()
    result = run(claude_worker, f"hello [api:mode=tools key={k}]").get(timeout=WAIT)
    assert result["result"] == "Tool result: tool-ran"
    assert result["num_turns"] == 2 and result["cost_usd"] > 0
    assert result["usage"]["input_tokens"] > 0 and result["model_usage"]
    assert result["api_calls"] == result["api_calls_total"] == api.count(key=k) == 2
    assert result["attempts"] == 1 and result["host"] == claude_worker.host
    assert result["workdir"] is None  # a scratch directory, removed
    assert list(claude_worker.scratch.iterdir()) == []
    sessions = list((claude_worker.home / ".claude").glob("projects/*/*.jsonl"))
    assert sessions == []  # --no-session-persistence


def test_turn_limit_keeps_the_session_and_resumes_it(claude_worker, api):
    k = key()
    with pytest.raises(AgentTurnLimit) as caught:
        run(claude_worker, f"do it [api:mode=tools key={k}]", max_turns=1,
            keep_session=True).get(timeout=WAIT)
    details = caught.value.details  # rebuilt on the caller's side from the JSON backend
    assert details["num_turns"] == 2 and details["cost_usd"] > 0
    assert details["errors"] == ["Reached maximum number of turns (1)"]
    assert details["host"] == claude_worker.host and details["attempts"] == 1
    session = details["session_id"]
    assert f"resume={session!r}" in str(caught.value)
    resumed = run_agent.apply_async((f"go on [api:mode=ok key={k}-2]",),
                                    {"resume": session}, host=details["host"]).get(timeout=WAIT)
    assert resumed["session_id"] == session
    assert resumed["workdir"] == details["workdir"]
    # the resumed request carried the conversation so far, not just the new prompt
    last = [call for call in api.calls if call.get("key") == f"{k}-2"][-1]
    assert last.get("messages", 0) > 2, last


@pytest.mark.parametrize("mode, error, status", [
    ("429", AgentRateLimited, 429), ("529", AgentRateLimited, 529),
    ("500", AgentUnavailable, 500),
])
def test_persistent_api_errors_are_retried_then_fail_with_the_bill(claude_worker, api, mode,
                                                                   error, status):
    k = key()
    started = time.monotonic()
    with pytest.raises(error) as caught:
        run(claude_worker, f"hi [api:mode={mode} key={k} retry-after=0]", retries=2,
            timeout=120).get(timeout=WAIT)
    elapsed = time.monotonic() - started
    details = caught.value.details
    assert details["api_error_status"] == status
    assert details["attempts"] == 3
    assert details["api_calls_total"] == api.count(key=k) == 6  # 3 attempts x (1 + 1 retry)
    assert "gave up after 3 attempts and 6 API calls" in str(caught.value)
    assert elapsed < 60, elapsed


def test_rate_limit_that_clears_is_retried_to_success(claude_worker, api):
    k = key()
    result = run(claude_worker, f"hi [api:mode=429 until=3 key={k} retry-after=0]",
                 retries=3).get(timeout=WAIT)
    assert result["result"].startswith("Hello from the stand-in")
    assert result["attempts"] == 2
    assert result["api_calls_total"] == api.count(key=k) == 4


def test_retries_stop_where_the_timeout_ends(claude_worker, api):
    k = key()
    started = time.monotonic()
    with pytest.raises(AgentRateLimited) as caught:
        run(claude_worker, f"hi [api:mode=429 key={k} retry-after=2]", retries=50,
            timeout=10).get(timeout=WAIT)
    elapsed = time.monotonic() - started
    assert "would not fit in the timeout of 10s" in str(caught.value)
    assert caught.value.details["api_calls_total"] == api.count(key=k)
    assert elapsed < 10 + 5, elapsed


@pytest.mark.parametrize("mode", ["401", "403"])
def test_bad_credentials_fail_at_once(claude_worker, api, mode):
    k = key()
    started = time.monotonic()
    with pytest.raises(AgentAuthError) as caught:
        run(claude_worker, f"hi [api:mode={mode} key={k}]", retries=3).get(timeout=WAIT)
    assert time.monotonic() - started < 30
    assert caught.value.details["attempts"] == 1
    assert caught.value.details["api_calls_total"] == api.count(key=k) <= 2


def test_timeout_names_the_session_and_shows_the_output_tail(claude_worker, api):
    k = key()
    with pytest.raises(TaskTimeout) as caught:
        run(claude_worker, f"hi [api:mode=slow secs=60 key={k}]", timeout=8).get(timeout=WAIT)
    details = caught.value.details
    assert details["session_id"] and details["profile"] == "claude"
    assert "exceeded its timeout of 8s" in str(caught.value)
    assert "\nstdout: " in str(caught.value)  # the tail of what it printed


def test_the_worker_operator_caps_what_callers_ask(claude_worker):
    with pytest.raises(InvalidRequest, match="TURBO_AGENT_PERMISSION_MODES"):
        run(claude_worker, "hi", permission_mode="bypassPermissions").get(timeout=WAIT)
    with pytest.raises(InvalidRequest, match="TURBO_AGENT_CWD_ROOTS"):
        run(claude_worker, "hi", cwd="/etc").get(timeout=WAIT)


def test_unreachable_api_is_transient(tmp_path, celery_app, base_dir):
    from celeryapp.dev.localworker import WorkerProcess

    queue = unique_queue()
    env = {**CLAUDE_QUIET_ENV, "TURBO_CLAUDE_BIN": str(CLAUDE), "HOME": str(tmp_path),
           "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
           "TURBO_AGENT_SCRATCH_DIR": str(tmp_path / "runs"),
           "TURBO_AGENT_CLI_MAX_RETRIES": "1"}
    worker = WorkerProcess(name=f"worker@unreach{uuid.uuid4().hex[:4]}", queues=queue,
                           concurrency=1, env=env,
                           logfile=base_dir / "logs" / "real-claude-unreachable.log")
    worker.start(celery_app)
    try:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable) as caught:
            run_agent.apply_async(("hi",), {"retries": 1}, queue=queue).get(timeout=WAIT)
        assert "Unable to connect to API" in str(caught.value)
        assert caught.value.details["attempts"] == 2
        assert time.monotonic() - started < 60
    finally:
        worker.stop()


def cli_environment(scratch: Path, timeout: float = 30) -> set[str]:
    """The variable names of the agent CLI running in a directory under ``scratch``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not str((entry / "cwd").resolve()).startswith(str(scratch)):
                    continue
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"ANTHROPIC_BASE_URL=" in environ:
                return {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0")
                        if item}
        time.sleep(0.1)
    raise AssertionError(f"no agent CLI seen running under {scratch}")


def test_the_agent_sees_only_its_allowlisted_environment(claude_worker):
    """Read from /proc while the real CLI runs: the worker's DATABRICKS_TOKEN and
    TURBO_* settings are not in its environment; its own ANTHROPIC_* are."""
    handle = run(claude_worker, f"hi [api:mode=slow secs=5 key={key()}]", timeout=30)
    names = cli_environment(claude_worker.scratch)
    handle.get(timeout=WAIT)
    assert {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_MAX_RETRIES", "PATH",
            "HOME"} <= names
    assert "DATABRICKS_TOKEN" not in names
    assert not [name for name in names if name.startswith("TURBO_")]
