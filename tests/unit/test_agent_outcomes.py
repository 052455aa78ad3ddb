"""The claude parser against what the real CLI printed (recorded by
tests/support/record_claude.py against the Messages API stand-in; the live tests
in tests/unit/test_real_claude.py and tests/integration/test_real_claude_worker.py check
the same against the CLI itself)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.agent_clis import PINS
from tasks.agents import claude
from tasks.agents.outcome import FIELDS, Outcome, error_class
from tasks.errors import (
    AgentAuthError,
    AgentError,
    AgentRateLimited,
    AgentTurnLimit,
    AgentUnavailable,
)

RECORDED = Path(__file__).parents[1] / "support" / "recorded" / f"claude-{PINS['claude'][1]}"


def replay(mode: str, chunk: int = 4096) -> tuple[Outcome, dict]:
    """The recorded stdout fed to the reader in pieces, as a pipe delivers it."""
    record = json.loads((RECORDED / f"{mode}.json").read_text())
    reader = claude.reader()
    data = record["stdout"].encode()
    for start in range(0, len(data), chunk):
        reader.add(data[start:start + chunk])
    reader.finish()
    return Outcome(record["exit_code"], reader.text(), record["stderr"], reader.events), record


def test_success_keeps_answer_session_cost_usage_and_calls():
    outcome, record = replay("ok", chunk=7)
    result = claude.parse(outcome)
    assert result["result"].startswith("Hello from the stand-in")
    assert set(FIELDS) <= set(result)
    assert result["session_id"] and result["num_turns"] == 1
    assert result["cost_usd"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["model_usage"] and result["stop_reason"] == "end_turn"
    assert result["api_calls"] == record["api_calls"] == 1


def test_tool_loop_counts_each_api_answer_once():
    outcome, record = replay("tools")
    result = claude.parse(outcome)
    assert result["num_turns"] == 2
    assert result["api_calls"] == record["api_calls"] == 2


def test_turn_limit_is_resumable_with_its_session_and_cost():
    outcome, record = replay("max-turns")
    with pytest.raises(AgentTurnLimit) as caught:
        claude.parse(outcome)
    details = caught.value.details
    assert details["session_id"] in str(caught.value)  # resume=... in the message too
    assert details["subtype"] == "error_max_turns" and details["terminal_reason"] == "max_turns"
    assert details["cost_usd"] > 0 and details["usage"]["output_tokens"] > 0
    assert details["errors"] == ["Reached maximum number of turns (1)"]
    assert details["api_calls"] == record["api_calls"]


@pytest.mark.parametrize("mode, error, status", [
    ("429", AgentRateLimited, 429), ("529", AgentRateLimited, 529),
    ("500", AgentUnavailable, 500), ("unreachable", AgentUnavailable, None),
    ("401", AgentAuthError, 401), ("403", AgentAuthError, 403),
])
def test_api_errors_are_classed_with_status_and_calls(mode, error, status):
    outcome, record = replay(mode)
    with pytest.raises(error) as caught:
        claude.parse(outcome)
    details = caught.value.details
    assert details["api_error_status"] == status and details["exit_code"] == 1
    assert details["session_id"] and details["cost_usd"] == 0
    if mode != "unreachable":  # nothing listened: the stand-in counted nothing
        assert details["api_calls"] == record["api_calls"]
    assert details["api_retries"] == details["api_calls"] - 1
    assert "the CLI said: " in str(caught.value)


def test_cut_short_run_still_names_its_session():
    outcome, _ = replay("ok")
    lines = [line for line in outcome.stdout.splitlines() if '"type":"result"' not in line]
    reader = claude.reader()
    reader.add(("\n".join(lines) + "\n").encode())
    partial = claude.partial(Outcome(-1, reader.text(), "", reader.events))
    assert partial["session_id"] and partial["api_calls"] == 1
    assert partial["usage"]["input_tokens"] > 0


def test_no_result_event_is_an_error_naming_stderr():
    reader = claude.reader()
    reader.add(b"error: unknown option '--bogus'\n")
    with pytest.raises(AgentError) as caught:
        claude.parse(Outcome(1, reader.text(), "error: unknown option '--bogus'", reader.events))
    assert "unknown option" in str(caught.value) and type(caught.value) is AgentError


def test_usage_limit_answer_is_a_rate_limit():
    reader = claude.reader()
    reader.add(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                           "result": "Claude AI usage limit reached|1767225600"}).encode())
    reader.finish()
    with pytest.raises(AgentRateLimited):
        claude.parse(Outcome(0, reader.text(), "", reader.events))


def test_an_answer_about_rate_limits_is_an_answer():
    reader = claude.reader()
    reader.add(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                           "result": "Rate limits: 429 means too many requests."}).encode()
               + b"\n")
    assert claude.parse(Outcome(0, reader.text(), "", reader.events))["result"].startswith("Rate")


@pytest.mark.parametrize("status, texts, error", [
    (429, (), AgentRateLimited), (529, (), AgentRateLimited), (503, (), AgentUnavailable),
    (401, (), AgentAuthError), (403, (), AgentAuthError), (400, (), AgentError),
    (None, ("API Error: Unable to connect to API (ConnectionRefused)",), AgentUnavailable),
    (None, ("stream disconnected before completion",), AgentUnavailable),
    (None, ("exceeded retry limit, last status: 429 Too Many Requests",), AgentRateLimited),
    (None, ('{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}',), AgentRateLimited),
    (None, ("API key not valid. Please pass a valid API key.",), AgentAuthError),
    (None, ("Tool failed: file not found",), AgentError),
])
def test_error_classes(status, texts, error):
    assert error_class(status, *texts) is error
