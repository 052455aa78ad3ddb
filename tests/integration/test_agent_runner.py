"""The agent runner, profiles and slots without Celery, against the fake claude CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.helpers import gone, wait_for

from tasks.agents import profiles, runner
from tasks.agents.profiles import Outcome, get_profile
from tasks.agents.slots import HostSlots
from tasks.errors import (AgentError, AgentNotFound, AgentRateLimited, InvalidRequest, SlotsBusy,
                          TaskTimeout)

FAKE = str(Path(__file__).resolve().parents[1] / "support" / "fakes" / "claude")


def run(prompt, timeout=30.0, **kwargs):
    options = {name: kwargs.pop(name) for name in profiles.PROFILES["claude"].options
               if name in kwargs}
    kwargs.setdefault("executable", FAKE)
    return runner.run("claude", prompt, options, timeout=timeout, **kwargs)


def test_success_fields_are_parsed(tmp_path):
    result = run("hello there", model="m-test")
    assert result["result"] == "fake claude (m-test): hello there"
    assert result["is_error"] is False
    assert result["subtype"] == "success"
    assert result["cost_usd"] == 0.0123
    assert len(result["session_id"]) == 36
    assert result["num_turns"] == 1
    assert result["usage"]["output_tokens"] == 7
    assert result["exit_code"] == 0
    assert result["profile"] == "claude"
    assert result["duration_s"] > 0
    assert result["pid"] > 0 and gone(result["pid"])


@pytest.mark.parametrize("prompt", [
    """$(rm -rf ~); "x" 'y' `id` | && ; \\n * ? ~ $HOME""",
    "-v --help starts like a flag",
    "ünïcödé ✓ 中文\nsecond line\ttab",
])
def test_prompt_arrives_intact(prompt):
    result = run(prompt + " [fake:echo-args]")
    argv = json.loads(result["result"])
    assert argv[-1] == prompt + " [fake:echo-args]"
    assert argv[-2] == "--"


def test_long_prompt_goes_on_stdin():
    prompt = "x" * (profiles.ARGV_PROMPT_LIMIT + 10) + " [fake:echo-args]"
    argv = json.loads(run(prompt)["result"])
    assert argv == ["-p", "--output-format", "json"]
    assert run("y" * (profiles.ARGV_PROMPT_LIMIT + 10))["result"].endswith("y" * 1000)


def test_options_map_to_flags():
    result = run("[fake:echo-args]", model="opus", max_turns=3,
                 allowed_tools=["Bash(git log:*)", "Edit"], permission_mode="acceptEdits",
                 append_system_prompt="Be brief.")
    assert json.loads(result["result"]) == [
        "-p", "--output-format", "json", "--model", "opus", "--max-turns", "3",
        "--allowedTools", "Bash(git log:*),Edit", "--permission-mode", "acceptEdits",
        "--append-system-prompt", "Be brief.", "--", "[fake:echo-args]"]


def test_cwd_is_honoured(tmp_path):
    assert run("[fake:cwd]", cwd=str(tmp_path))["result"] == str(tmp_path)


def test_turbo_settings_are_hidden_from_the_agent():
    env = runner.agent_env({"PATH": "/bin", "TURBO_REDIS_PASSWORD": "s3cret",
                            "TURBO_BROKER_URL": "redis://:s3cret@h", "ANTHROPIC_API_KEY": "k"})
    assert env == {"PATH": "/bin", "ANTHROPIC_API_KEY": "k"}


# --- validation -----------------------------------------------------------------------
@pytest.mark.parametrize("profile,prompt,options,needle", [
    ("nope", "hi", {}, "unknown agent profile 'nope'; known profiles: claude, codex, gemini"),
    ("codex", "hi", {"max_turns": 3}, "option 'max_turns' is not supported by agent profile "
                                       "'codex' (supported: model)"),
    ("claude", "hi", {"max_turns": 0}, "option 'max_turns' for profile 'claude' must be"),
    ("claude", "hi", {"max_turns": True}, "max_turns"),
    ("claude", "hi", {"allowed_tools": [""]}, "allowed_tools"),
    ("claude", "hi", {"model": 5}, "model"),
    ("claude", "", {}, "prompt must be a non-empty string"),
    ("claude", "a\x00b", {}, "NUL"),
    ("claude", None, {}, "prompt"),
])
def test_bad_requests_are_refused(profile, prompt, options, needle):
    with pytest.raises(InvalidRequest, match=needle.replace("(", r"\(").replace(")", r"\)")):
        runner.run(profile, prompt, options, executable=FAKE, timeout=5)


@pytest.mark.parametrize("cwd", ["relative/dir", "/nonexistent/dir", 42])
def test_bad_cwd_is_refused(cwd):
    with pytest.raises(InvalidRequest, match="cwd"):
        run("hi", cwd=cwd)


def test_missing_executable_names_the_setting():
    with pytest.raises(AgentNotFound, match="'/nonexistent/claude'.*TURBO_CLAUDE_BIN"):
        run("hi", executable="/nonexistent/claude")
    with pytest.raises(AgentNotFound, match="TURBO_CLAUDE_BIN"):
        run("hi", executable="no-such-claude-binary")


def test_not_executable_file_is_not_found(tmp_path):
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(AgentNotFound):
        run("hi", executable=str(script))


# --- failures ---------------------------------------------------------------------------
def test_error_result_raises_with_exit_code_subtype_and_stderr():
    with pytest.raises(AgentError) as raised:
        run("[fake:error] [fake:stderr=something_went_wrong_here]")
    message = str(raised.value)
    assert "exit code 1" in message
    assert "subtype error_during_execution" in message
    assert "something went wrong here" in message
    assert "error during execution: tool failed" in message


def test_max_turns_is_an_error_even_with_exit_code_zero():
    with pytest.raises(AgentError, match="subtype error_max_turns") as raised:
        run("[fake:max-turns]", max_turns=2)
    assert "exit code 0" in str(raised.value)
    assert "session_id" in str(raised.value)  # so the caller can resume


def test_garbage_output_is_an_error():
    with pytest.raises(AgentError, match="printed no JSON result") as raised:
        run("[fake:garbage]")
    assert "this is not json" in str(raised.value)


def test_crash_shows_the_traceback_tail():
    with pytest.raises(AgentError, match="exit code 2") as raised:
        run("[fake:crash]")
    assert "RuntimeError: fake claude crashed on purpose" in str(raised.value)


def test_unknown_flag_error_from_the_cli_is_reported(tmp_path):
    script = tmp_path / "claude"
    script.write_text(f"#!/bin/sh\nexec {FAKE} --no-such-flag \"$@\"\n")
    script.chmod(0o755)
    with pytest.raises(AgentError, match="unknown option '--no-such-flag'"):
        run("hi", executable=str(script))


def test_stderr_tail_is_bounded():
    with pytest.raises(AgentError) as raised:
        run("[fake:error] [fake:stderr=" + "y" * 10000 + "]")
    assert len(str(raised.value)) < 4 * profiles.TAIL_CHARS


@pytest.mark.parametrize("directive", ["[fake:overloaded]",
                                       "[fake:rate-limit-until=5 state={state}]"])
def test_rate_limits_are_transient_even_with_exit_code_zero(tmp_path, directive):
    with pytest.raises(AgentRateLimited, match="exit code 0"):
        run(directive.format(state=tmp_path / "calls"))


def test_rate_limit_then_success(tmp_path):
    prompt = f"[fake:rate-limit-until=1 state={tmp_path / 'calls'}]"
    with pytest.raises(AgentRateLimited, match="api_error_status 429"):
        run(prompt)
    assert run(prompt)["is_error"] is False


# --- parsing edge cases (no process) ----------------------------------------------
def claude_json(**fields) -> str:
    payload = {"type": "result", "subtype": "success", "is_error": False, "result": "ok",
               "session_id": "s", "total_cost_usd": 0.1, "num_turns": 1, "duration_ms": 1500}
    payload.update(fields)
    return json.dumps(payload)


def test_claude_event_list_and_leading_log_lines_are_read():
    events = json.dumps([{"type": "system", "subtype": "init"}, json.loads(claude_json())])
    assert profiles.parse_claude(Outcome(0, events, ""))["result"] == "ok"
    noisy = "warning: something\n" + claude_json(result="fine")
    parsed = profiles.parse_claude(Outcome(0, noisy, ""))
    assert parsed["result"] == "fine" and parsed["cli_duration_s"] == 1.5


@pytest.mark.parametrize("outcome", [
    Outcome(0, claude_json(result="Claude AI usage limit reached|1750708800"), ""),
    Outcome(0, claude_json(is_error=True, result="You've hit your limit · resets 3am"), ""),
    Outcome(1, "", "Error: 429 Too Many Requests"),
])
def test_claude_usage_limits_are_rate_limits(outcome):
    with pytest.raises(AgentRateLimited):
        profiles.parse_claude(outcome)


def test_a_successful_answer_about_rate_limits_is_not_a_rate_limit():
    parsed = profiles.parse_claude(Outcome(0, claude_json(result="Use a rate limit of 5/s."), ""))
    assert parsed["result"] == "Use a rate limit of 5/s."


def test_nonzero_exit_with_success_json_is_an_error():
    with pytest.raises(AgentError, match="exit code 3"):
        profiles.parse_claude(Outcome(3, claude_json(), ""))


def test_gemini_and_codex_profiles():
    gemini = get_profile("gemini")
    assert gemini.invocation("gemini", "-x hi", {"model": "g"}).argv == [
        "gemini", "--output-format", "json", "--model", "g", "--prompt=-x hi"]
    answer = json.dumps({"response": "Paris", "stats": {"models": {}}, "session_id": "g1"})
    assert gemini.parse(Outcome(0, answer, ""))["result"] == "Paris"
    quota = json.dumps({"error": {"type": "ApiError", "message": "Quota exceeded", "code": 429}})
    with pytest.raises(AgentRateLimited):
        gemini.parse(Outcome(1, quota, ""))
    with pytest.raises(AgentError, match="exit code 42"):
        gemini.parse(Outcome(42, "", "invalid argument"))

    codex = get_profile("codex")
    invocation = codex.invocation("codex", "y" * (profiles.ARGV_PROMPT_LIMIT + 1), {})
    assert invocation.argv == ["codex", "exec", "--skip-git-repo-check", "-"]
    assert invocation.stdin.startswith(b"yyy")
    assert codex.parse(Outcome(0, "done\n", "progress..."))["result"] == "done"
    with pytest.raises(AgentRateLimited):
        codex.parse(Outcome(1, "", "stream error: 429 Too Many Requests; rate limit reached"))
    with pytest.raises(AgentError, match="exit code 1"):
        codex.parse(Outcome(1, "", "Not inside a trusted directory"))


# --- deadlines and process groups ---------------------------------------------------
def test_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 3s"):
        run(f"[fake:grandchild={pidfile}] [fake:pidfile={tmp_path / 'leader.pid'}]",
            timeout=3, kill_grace=2)
    assert time.monotonic() - started < 15
    for name in ("grandchild.pid", "leader.pid"):
        pid = int(wait_for(lambda: (tmp_path / name).exists() and (tmp_path / name).read_text().strip(), 1, name))
        assert gone(pid), f"{name} {pid} still running"


def test_kill_escalates_when_term_is_ignored(tmp_path):
    started = time.monotonic()
    with pytest.raises(TaskTimeout):
        run(f"[fake:ignore-term] [fake:sleep=60] [fake:pidfile={tmp_path / 'pid'}]",
            timeout=3.0, kill_grace=1.0)
    assert 3.9 < time.monotonic() - started < 15  # TERM ignored: KILL after the grace
    assert gone(int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip(), 1, "pid")))


class Interrupted(BaseException):
    """Stands in for Celery's SoftTimeLimitExceeded raised by a signal handler."""


def test_signal_in_the_waiting_thread_kills_the_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"

    def raise_interrupted(signum, frame):
        raise Interrupted()

    def signal_when_started():
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, str(pidfile))
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        threading.Thread(target=signal_when_started, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            run(f"[fake:grandchild={pidfile}]", timeout=120, kill_grace=2)
        assert time.monotonic() - started < 30
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert gone(int(pidfile.read_text()))


def test_output_of_a_process_outside_the_group_does_not_hang_the_run(tmp_path):
    script = tmp_path / "claude"
    # setsid puts the sleeper in its own session: it keeps the stdout pipe open.
    script.write_text(f"#!/bin/sh\nsetsid sleep 8 &\nexec {FAKE} \"$@\"\n")
    script.chmod(0o755)
    started = time.monotonic()
    assert run("hi", executable=str(script))["result"].endswith("hi")
    assert time.monotonic() - started < 8


# --- slots ------------------------------------------------------------------------------
def test_slots_cap_and_release(tmp_path):
    slots = HostSlots(tmp_path / "host", 2)
    with slots.acquire(1, note="a") as first, slots.acquire(1, note="b") as second:
        assert {first, second} == {0, 1}
        assert set(slots.holders()) == {0, 1}
        started = time.monotonic()
        with pytest.raises(SlotsBusy, match="all 2 agent slots"):
            with slots.acquire(0.5):
                pass
        assert 0.4 < time.monotonic() - started < 5
    with slots.acquire(0) as again:
        assert again in (0, 1)


def test_slot_waits_for_a_release(tmp_path):
    slots = HostSlots(tmp_path / "host", 1)
    release = threading.Event()

    def hold():
        with slots.acquire(1):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    threading.Timer(0.5, release.set).start()
    with slots.acquire(10) as index:
        assert index == 0
    holder.join()


def test_slot_of_a_dead_process_is_free(tmp_path):
    directory = tmp_path / "host"
    code = (f"from tasks.agents.slots import HostSlots\nimport sys, time\n"
            f"with HostSlots({str(directory)!r}, 1).acquire(5):\n"
            f"    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SlotsBusy):
            with HostSlots(directory, 1).acquire(0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with HostSlots(directory, 1).acquire(1) as index:
        assert index == 0


def test_zero_slots_means_no_cap(tmp_path):
    with HostSlots(tmp_path, 0).acquire(0) as index:
        assert index is None
