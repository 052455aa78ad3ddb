"""What callers may ask of an agent run: the request shape (refused at the door by
delay() and turbo), the worker operator's caps (and the worker's one check of both), the
run's environment and room."""
from __future__ import annotations

from pathlib import Path

import pytest

from celeryapp.core.agent_options import check_request
from tasks.agents.events import JsonLines
from tasks.agents.request import AgentRequest
from tasks.agents.sandbox import Caps, Room
from tasks.errors import InvalidRequest

SID = "0e732061-e35c-49a0-b6f2-cd379e48e9d4"


@pytest.mark.parametrize("profile, options, needle", [
    ("claude", {"permission_mode": "bogus"}, "must be one of acceptEdits, auto"),
    ("claude", {"max_turns": 0}, "'max_turns' for profile 'claude' must be a whole number >= 1"),
    ("claude", {"max_turns": True}, "whole number"),
    ("claude", {"max_turns": "3"}, "whole number"),
    ("claude", {"model": 5}, "'model' for profile 'claude' must be a non-empty string"),
    ("claude", {"model": "--dangerously-skip-permissions"}, "not starting with '-'"),
    ("claude", {"allowed_tools": [1]}, "list of tool names"),
    ("claude", {"allowed_tools": "--bogus"}, "list of tool names"),
    ("claude", {"resume": "abc"}, "a session id"),
    ("claude", {"keep_workdir": "yes"}, "true or false"),
    ("claude", {"resume": SID, "keep_session": False}, "cannot be combined"),
    ("codex", {"max_turns": 2}, "'max_turns' is not supported by agent profile 'codex'"),
    ("codex", {"permission_mode": "acceptEdits"}, "read-only, workspace-write"),
    ("gemini", {"allowed_tools": ["Read"]}, "not supported by agent profile 'gemini'"),
    ("nope", {}, "unknown agent profile 'nope'; known profiles: claude, codex, gemini"),
])
def test_bad_requests_name_what_is_wrong(profile, options, needle):
    with pytest.raises(InvalidRequest, match=None) as caught:
        check_request("hi", profile, options)
    assert needle in str(caught.value)


@pytest.mark.parametrize("prompt, needle", [
    ("", "non-empty"), ("  ", "non-empty"), (None, "non-empty"), ("a\x00b", "NUL"),
    ("x" * 101, "limit is 100 bytes"),
])
def test_bad_prompts(prompt, needle):
    with pytest.raises(InvalidRequest) as caught:
        check_request(prompt, "claude", {}, prompt_limit=100)
    assert needle in str(caught.value)


def test_good_request_is_returned_checked():
    options = check_request("hi", "claude", {
        "model": "sonnet", "max_turns": 3, "allowed_tools": "Read", "permission_mode": "plan",
        "resume": SID, "keep_workdir": True, "append_system_prompt": None})
    assert options == {"model": "sonnet", "max_turns": 3, "allowed_tools": ["Read"],
                       "permission_mode": "plan", "resume": SID, "keep_workdir": True}


def caps(tmp_path: Path, **kwargs) -> Caps:
    return Caps(scratch_dir=tmp_path / "scratch", **kwargs)


def test_operator_caps_refuse_modes_tools_and_directories(tmp_path):
    allowed = tmp_path / "repos"
    (allowed / "one").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "elsewhere")
    c = caps(tmp_path, permission_modes=("default", "plan"),
             allowed_tools=("Read", "Grep", "Bash(git *)"), cwd_roots=(str(allowed),))
    c.check({"permission_mode": "plan", "allowed_tools": ["Read", "Bash(git log:*)"]},
            str(allowed / "one"))
    for options, cwd, needle in [
        ({"permission_mode": "bypassPermissions"}, None, "TURBO_AGENT_PERMISSION_MODES"),
        ({"allowed_tools": ["Bash"]}, None, "tool 'Bash' is not allowed"),
        ({"allowed_tools": ["Bash(rm -rf /)"]}, None, "TURBO_AGENT_ALLOWED_TOOLS"),
        ({}, str(tmp_path / "elsewhere"), "TURBO_AGENT_CWD_ROOTS"),
        ({}, str(allowed / "escape"), "outside the directories"),  # a symlink out
        ({}, str(allowed / "missing"), "not a directory"),
        ({}, "relative/dir", "absolute path"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            c.check(options, cwd)
        assert needle in str(caught.value), options


def test_the_worker_checks_a_request_once_shape_limit_and_caps(tmp_path):
    """The worker's one check (AgentRequest.checked): the shape, the prompt size limit
    and the operator's caps, each with the error text the caller knows."""
    c = caps(tmp_path, permission_modes=("plan",))
    request = AgentRequest.checked("claude", "hi", {"permission_mode": "plan", "model": None},
                                   caps=c, prompt_limit=100)
    assert request.profile.name == "claude" and request.options == {"permission_mode": "plan"}
    assert request.cwd is None and request.caps is c
    for profile, prompt, options, cwd, needle in [
        ("nope", "hi", {}, None, "unknown agent profile 'nope'"),
        ("claude", "x" * 101, {}, None, "limit is 100 bytes (TURBO_AGENT_MAX_PROMPT_BYTES)"),
        ("claude", "hi", {"permission_mode": "default"}, None, "TURBO_AGENT_PERMISSION_MODES"),
        ("claude", "hi", {}, 42, "cwd must be an absolute path, got 42"),
        ("claude", "hi", {}, str(tmp_path), "TURBO_AGENT_CWD_ROOTS"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            AgentRequest.checked(profile, prompt, options, caps=c, cwd=cwd, prompt_limit=100)
        assert needle in str(caught.value), needle


def test_default_caps_allow_no_cwd_at_all(tmp_path):
    with pytest.raises(InvalidRequest, match="none: runs get a scratch directory"):
        caps(tmp_path).check({}, str(tmp_path))


def test_environment_is_an_allowlist(tmp_path):
    base = {"PATH": "/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "LC_ALL": "C",
            "ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_USE_BEDROCK": "1",
            "DATABRICKS_TOKEN": "dapi-secret", "AWS_SECRET_ACCESS_KEY": "aws",
            "TURBO_REDIS_PASSWORD": "redis", "TURBO_BROKER_URL": "redis://:pw@h",
            "OPENAI_API_KEY": "o", "CLAUDECODE": "1", "HTTPS_PROXY": "http://proxy"}
    env = caps(tmp_path).env(("ANTHROPIC_*", "CLAUDE_*"), {"CLAUDE_CODE_MAX_RETRIES": "1"},
                             base, hidden=("CLAUDECODE",))
    assert env == {"PATH": "/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "LC_ALL": "C",
                   "ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_USE_BEDROCK": "1",
                   "HTTPS_PROXY": "http://proxy", "CLAUDE_CODE_MAX_RETRIES": "1"}
    more = caps(tmp_path, env_pass=("AWS_*", "TURBO_*")).env((), {}, base)
    assert more["AWS_SECRET_ACCESS_KEY"] == "aws"
    assert not any(key.startswith("TURBO_") for key in more)  # never, even when asked


def test_scratch_room_is_removed_unless_kept(tmp_path):
    c = caps(tmp_path)
    with Room(c) as room:
        (room.path / "file").write_text("x")
        (room.tmp / "gemini-client-error.json").write_text("the prompt")
        assert room.path.parent.parent == c.scratch_dir and room.kept is None
        assert room.tmp.parent == room.path.parent  # TMPDIR beside, not inside, the work
    assert not room.path.parent.exists()
    with Room(c, keep=True) as kept:
        pass
    assert kept.path.is_dir() and kept.kept == str(kept.path)
    with pytest.raises(RuntimeError):
        with Room(c) as failed:
            raise RuntimeError("the run failed")
    assert not failed.path.parent.exists()


def test_caller_cwd_is_never_removed(tmp_path):
    with Room(caps(tmp_path), cwd=str(tmp_path)) as room:
        assert room.tmp is None  # the CLI's TMPDIR stays the worker's
    assert room.path == tmp_path and tmp_path.is_dir()


def test_session_rooms_are_kept_and_resumed_on_the_same_host(tmp_path):
    c = caps(tmp_path)
    with Room(c, session=("claude", SID)) as room:
        pass
    assert room.path.parent == c.session_dir("claude", SID) and room.path.is_dir()
    with Room(c, session=("claude", SID), resume=True) as again:
        assert again.path == room.path
    other = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(InvalidRequest, match="not kept on this worker"):
        with Room(c, session=("claude", other), resume=True):
            pass


class Collect:
    def __init__(self, seen: list):
        self.on_event = seen.append


def test_json_lines_across_chunks_with_a_bounded_tail():
    seen = []
    lines = JsonLines(Collect(seen))
    payload = b'{"a": 1}\nnot json\n{"b": ' + b'"' + b"x" * 200_000 + b'"}\n[{"c": 3}]\n{"d": 4}'
    for start in range(0, len(payload), 1000):
        lines.add(payload[start:start + 1000])
    lines.finish()
    assert [sorted(event) for event in seen] == [["a"], ["b"], ["c"], ["d"]]
    assert lines.other_lines == 1 and len(lines.text()) <= 64 * 1024


def test_json_lines_skip_a_line_too_long_to_keep(monkeypatch):
    from tasks.agents import events
    monkeypatch.setattr(events, "MAX_LINE_BYTES", 100)
    seen = []
    lines = JsonLines(Collect(seen))
    lines.add(b'{"big": "' + b"y" * 500 + b'"}\n{"small": 1}\n')
    assert seen == [{"small": 1}] and lines.skipped_lines == 1
