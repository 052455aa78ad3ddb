"""The agent runner, profiles and slots without Celery, against the fake claude CLI
(tests/support/fakes/claude, kept in line with the real one by test_real_claude.py)."""
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

from celeryapp.core.agent_options import CLAUDE_PERMISSION_MODES
from support.helpers import gone, run_checked, wait_for
from tasks.agents.request import AgentRequest
from tasks.agents.sandbox import Caps
from tasks.agents.slots import HostSlots
from tasks.errors import (
    AgentAuthError,
    AgentError,
    AgentNotFound,
    AgentRateLimited,
    AgentTurnLimit,
    AgentUnavailable,
    InvalidRequest,
    SlotsBusy,
    TaskTimeout,
)

FAKE = str(Path(__file__).resolve().parents[1] / "support" / "fakes" / "claude")
OPTIONS = ("model", "max_turns", "allowed_tools", "permission_mode", "append_system_prompt",
           "resume", "keep_session", "keep_workdir")
SID = "0e732061-e35c-49a0-b6f2-cd379e48e9d4"


@pytest.fixture
def caps(tmp_path) -> Caps:
    return Caps(scratch_dir=tmp_path / "scratch", permission_modes=CLAUDE_PERMISSION_MODES,
                cwd_roots=(str(tmp_path),), kill_grace=2.0)


@pytest.fixture
def run(caps):
    def run(prompt, timeout=30.0, **kwargs):
        options = {name: kwargs.pop(name) for name in OPTIONS if name in kwargs}
        kwargs.setdefault("executable", FAKE)
        kwargs["caps"] = kwargs.pop("with_caps", caps)
        return run_checked("claude", prompt, options, timeout=timeout, **kwargs)
    return run


def test_success_fields_are_parsed(run):
    result = run("hello there", model="m-test")
    assert result["result"] == "fake claude (m-test): hello there"
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["cost_usd"] == 0.0123 and result["num_turns"] == 1
    assert len(result["session_id"]) == 36
    assert result["usage"]["output_tokens"] == 7 and result["model_usage"]
    assert result["api_calls"] == 1 and result["api_retries"] == 0
    assert result["exit_code"] == 0 and result["profile"] == "claude"
    assert result["duration_s"] > 0
    assert result["pid"] > 0 and gone(result["pid"])


@pytest.mark.parametrize("prompt", [
    """$(rm -rf ~); "x" 'y' `id` | && ; \\n * ? ~ $HOME""",
    "-v --help starts like a flag",
    "ünïcödé ✓ 中文\nsecond line\ttab",
    "x" * 300_000,
])
def test_prompt_travels_on_stdin_never_in_argv(run, prompt):
    result = run(prompt + " [fake:stdin-or-argv]")
    assert result["result"] == "stdin"
    argv = json.loads(run(prompt + " [fake:echo-args]")["result"])
    assert not any(prompt[:50] in arg for arg in argv)


def test_options_map_to_flags(run):
    result = run("[fake:echo-args]", model="opus", max_turns=3,
                 allowed_tools=["Bash(git log:*)", "Edit"], permission_mode="acceptEdits",
                 append_system_prompt="Be brief.")
    assert json.loads(result["result"]) == [
        "-p", "--output-format", "stream-json", "--verbose", "--model", "opus",
        "--max-turns", "3", "--allowedTools", "Bash(git log:*),Edit",
        "--permission-mode", "acceptEdits", "--append-system-prompt", "Be brief.",
        "--no-session-persistence"]


def test_the_cli_temp_files_stay_in_the_run(run, caps):
    tmp = Path(run("[fake:env=TMPDIR]", keep_workdir=True)["result"])
    assert tmp.name == "tmp" and tmp.parent.parent == caps.scratch_dir


def test_a_kept_session_is_named_and_resumed(run, caps):
    argv = json.loads(run("[fake:echo-args]", keep_session=True)["result"])
    assert "--no-session-persistence" not in argv
    session = argv[argv.index("--session-id") + 1]
    assert caps.session_dir("claude", session).is_dir()
    resumed = json.loads(run("[fake:echo-args]", resume=session)["result"])
    assert resumed[-2:] == ["--resume", session]
    with pytest.raises(InvalidRequest, match="not kept on this worker"):
        run("go on", resume=SID)


def test_runs_in_a_scratch_directory_removed_afterwards(run, caps):
    result = run("where [fake:cwd]")
    workdir = Path(result["result"])
    assert workdir.parent.parent == caps.scratch_dir and not workdir.parent.exists()
    assert result["workdir"] is None
    kept = run("where [fake:cwd]", keep_workdir=True)
    assert kept["workdir"] == kept["result"] and Path(kept["result"]).is_dir()


def test_a_failed_run_removes_its_scratch_directory_too(run, caps):
    with pytest.raises(AgentError):
        run("[fake:error]")
    assert list(caps.scratch_dir.iterdir()) == []


def test_cwd_under_the_allowed_roots_is_honoured(run, tmp_path):
    (tmp_path / "repo").mkdir()
    result = run("[fake:cwd]", cwd=str(tmp_path / "repo"))
    assert result["result"] == str(tmp_path / "repo") and result["workdir"] == result["result"]


def test_the_agent_sees_an_allowlisted_environment(run):
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "ANTHROPIC_API_KEY": "k", "DATABRICKS_TOKEN": "dapi-secret",
            "TURBO_REDIS_PASSWORD": "s3cret", "AWS_SECRET_ACCESS_KEY": "aws"}
    seen = {name: run(f"[fake:env={name}]", env=base)["result"] for name in base}
    assert seen["ANTHROPIC_API_KEY"] == "k" and base["PATH"] in seen["PATH"]  # (pyenv adds)
    assert not seen["DATABRICKS_TOKEN"] and not seen["TURBO_REDIS_PASSWORD"]
    assert not seen["AWS_SECRET_ACCESS_KEY"]
    assert run("[fake:env=CLAUDE_CODE_MAX_RETRIES]", env=base)["result"] == "1"


# --- validation -----------------------------------------------------------------------
@pytest.mark.parametrize("profile,prompt,options,needle", [
    ("nope", "hi", {}, "unknown agent profile 'nope'; known profiles: claude, codex, gemini"),
    ("codex", "hi", {"max_turns": 3}, "option 'max_turns' is not supported by agent profile "
                                       "'codex'"),
    ("claude", "hi", {"max_turns": 0}, "option 'max_turns' for profile 'claude' must be"),
    ("claude", "hi", {"permission_mode": "bogus"}, "must be one of acceptEdits"),
    ("claude", "", {}, "prompt must be a non-empty string"),
    ("claude", "a\x00b", {}, "NUL"),
])
def test_bad_requests_are_refused(caps, profile, prompt, options, needle):
    with pytest.raises(InvalidRequest) as caught:
        AgentRequest.checked(profile, prompt, options, caps=caps, prompt_limit=None)
    assert needle in str(caught.value)


@pytest.mark.parametrize("cwd, needle", [("relative/dir", "absolute"),
                                         ("/etc", "TURBO_AGENT_CWD_ROOTS"), (42, "cwd")])
def test_bad_cwd_is_refused(run, cwd, needle):
    with pytest.raises(InvalidRequest, match=needle):
        run("hi", cwd=cwd)


def test_missing_executable_names_the_setting(run):
    with pytest.raises(AgentNotFound, match="'/nonexistent/claude'.*TURBO_CLAUDE_BIN"):
        run("hi", executable="/nonexistent/claude")
    with pytest.raises(AgentNotFound, match="TURBO_CLAUDE_BIN"):
        run("hi", executable="no-such-claude-binary")


def test_not_executable_file_is_not_found(run, tmp_path):
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(AgentNotFound):
        run("hi", executable=str(script))


# --- outcomes ---------------------------------------------------------------------------
def test_error_result_keeps_its_details_and_stderr(run):
    with pytest.raises(AgentError) as raised:
        run("[fake:error] [fake:stderr=something_went_wrong_here]")
    message, details = str(raised.value), raised.value.details
    assert "exit code 1" in message and "something went wrong here" in message
    assert details["subtype"] == "error_during_execution" and details["exit_code"] == 1
    assert details["session_id"] and details["cost_usd"] == 0.0123


def test_turn_limit_is_its_own_error_with_the_session_to_resume(run):
    with pytest.raises(AgentTurnLimit) as raised:
        run("[fake:max-turns]", max_turns=2)
    details = raised.value.details
    assert details["subtype"] == "error_max_turns" and details["exit_code"] == 1
    assert details["num_turns"] == 3 and details["cost_usd"] == 0.0123  # limit + 1, as the real CLI
    assert f"resume={details['session_id']!r}" in str(raised.value)


@pytest.mark.parametrize("directive, error, status", [
    ("[fake:rate-limit-until=9 state={state}]", AgentRateLimited, 429),
    ("[fake:overloaded]", AgentRateLimited, 529),
    ("[fake:overloaded=repeated]", AgentRateLimited, None),
    ("[fake:unauthorized]", AgentAuthError, 401),
    ("[fake:forbidden]", AgentAuthError, 403),
    ("[fake:server-error]", AgentUnavailable, 500),
    ("[fake:server-error=unreachable]", AgentUnavailable, None),
])
def test_api_errors_are_classed(run, tmp_path, directive, error, status):
    with pytest.raises(error) as raised:
        run(directive.format(state=tmp_path / "calls"))
    assert raised.value.details["api_error_status"] == status
    assert raised.value.details["exit_code"] == 1


def test_rate_limit_then_success(run, tmp_path):
    prompt = f"[fake:rate-limit-until=1 state={tmp_path / 'calls'}]"
    with pytest.raises(AgentRateLimited, match="API Error: Request rejected \\(429\\)"):
        run(prompt)
    assert run(prompt)["is_error"] is False


def test_garbage_output_is_an_error(run):
    with pytest.raises(AgentError, match="printed no result event") as raised:
        run("[fake:garbage]")
    assert "this is not json" in str(raised.value)


def test_crash_shows_the_traceback_tail(run):
    with pytest.raises(AgentError, match="exit code 2") as raised:
        run("[fake:crash]")
    assert "RuntimeError: fake claude crashed on purpose" in str(raised.value)


def test_unknown_flag_error_from_the_cli_is_reported(run, tmp_path):
    script = tmp_path / "claude"
    script.write_text(f"#!/bin/sh\nexec {FAKE} --no-such-flag \"$@\"\n")
    script.chmod(0o755)
    with pytest.raises(AgentError, match="unknown option '--no-such-flag'"):
        run("hi", executable=str(script))


def test_stderr_tail_is_bounded(run):
    with pytest.raises(AgentError) as raised:
        run("[fake:error] [fake:stderr=" + "y" * 10000 + "]")
    assert len(str(raised.value)) < 5000


# --- deadlines and process groups ---------------------------------------------------
def test_timeout_kills_the_process_group_and_keeps_the_session(run, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="exceeded its timeout of 3s") as raised:
        run(f"[fake:grandchild={pidfile}] [fake:pidfile={tmp_path / 'leader.pid'}] "
            f"[fake:stderr=still_working_on_it]", timeout=3)
    assert time.monotonic() - started < 15
    assert raised.value.details["session_id"]  # from the init event, before any answer
    assert "still working on it" in str(raised.value)  # the output's tail
    for name in ("grandchild.pid", "leader.pid"):
        pid = int(wait_for(lambda name=name: (tmp_path / name).exists()
                           and (tmp_path / name).read_text().strip(), 1, name))
        assert gone(pid), f"{name} {pid} still running"


def test_kill_escalates_when_term_is_ignored(run, tmp_path, caps):
    import dataclasses
    started = time.monotonic()
    with pytest.raises(TaskTimeout):
        run(f"[fake:ignore-term] [fake:sleep=60] [fake:pidfile={tmp_path / 'pid'}]",
            timeout=3.0, with_caps=dataclasses.replace(caps, kill_grace=1.0))
    assert 3.9 < time.monotonic() - started < 15  # TERM ignored: KILL after the grace
    assert gone(int(wait_for(lambda: (tmp_path / "pid").exists()
                             and (tmp_path / "pid").read_text().strip(), 1, "pid")))


class Interrupted(BaseException):
    """Stands in for Celery's SoftTimeLimitExceeded raised by a signal handler."""


def test_signal_in_the_waiting_thread_kills_the_group(run, tmp_path):
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
            run(f"[fake:grandchild={pidfile}]", timeout=120)
        assert time.monotonic() - started < 30
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert gone(int(pidfile.read_text()))


def test_output_of_a_process_outside_the_group_does_not_hang_the_run(run, tmp_path):
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
