"""Agent CLI profiles: how to call each CLI headless and how to read its answer.

A profile turns ``(prompt, options)`` into an argv list (never a shell string)
and the finished process (exit code, stdout, stderr) into result fields, raising
:class:`AgentRateLimited` (retryable) or :class:`AgentError` (permanent) when the
run failed. Success is judged from exit code, ``is_error``, ``subtype`` and the
API status together: claude exits 0 on a rate limit.
Pure Python; the Celery task and the tests share it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import AgentError, AgentRateLimited, InvalidRequest

ARGV_PROMPT_LIMIT = 100 * 1024
"""Bytes; longer prompts go on stdin (Linux caps one argv string at 128 KiB)."""
TAIL_CHARS = 1500
RATE_LIMIT_STATUSES = (429, 529)

# Said by a failed run: a rate limit, an exhausted quota or an overloaded API.
_RATE_LIMIT_TEXT = re.compile(
    r"rate[ _-]?limit|usage limit|hit your limit|overloaded|quota exceeded|resource_exhausted"
    r"|too many requests|API Error: (?:429|529)\b", re.IGNORECASE)
# The whole answer of a claude run refused for the plan's usage limit, which
# some versions report with is_error false.
_USAGE_LIMIT_ANSWER = re.compile(
    r"^\s*(Claude AI usage limit reached|You['\u2019]ve hit your limit)")


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    stdin: bytes | None = None  # the prompt, when too long for argv


@dataclass(frozen=True)
class Outcome:
    """What a finished CLI process left behind."""
    exit_code: int
    stdout: str
    stderr: str


# --- option values ---------------------------------------------------------------
OptionBuilder = Callable[[Any], list[str]]


def _text(flag: str, limit: int = ARGV_PROMPT_LIMIT) -> OptionBuilder:
    def build(value: Any) -> list[str]:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if len(value.encode()) > limit:
            raise ValueError(f"must be at most {limit} bytes")
        return [flag, value]
    return build


def _positive_int(flag: str) -> OptionBuilder:
    def build(value: Any) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError("must be a whole number > 0")
        return [flag, str(value)]
    return build


def _tool_list(flag: str) -> OptionBuilder:
    """A list of tool rules (``"Bash(git log:*)"``, ``"Edit"``) as one comma-joined value."""
    def build(value: Any) -> list[str]:
        tools = [value] if isinstance(value, str) else value
        if not isinstance(tools, (list, tuple)) or not tools or not all(
                isinstance(tool, str) and tool.strip() and "\x00" not in tool for tool in tools):
            raise ValueError("must be a non-empty list of tool names")
        return [flag, ",".join(tool.strip() for tool in tools)]
    return build


# --- the profile type ----------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    name: str
    options: Mapping[str, OptionBuilder]
    head: tuple[str, ...]                        # after the executable
    prompt_args: Callable[[str], list[str]]      # the prompt as trailing argv
    stdin_args: tuple[str, ...]                  # trailing argv when the prompt is on stdin
    parse: Callable[[Outcome], dict]

    @property
    def setting(self) -> str:
        return f"{self.name}_bin"

    @property
    def env_var(self) -> str:
        return f"TURBO_{self.name.upper()}_BIN"

    def check(self, prompt: Any, options: Mapping[str, Any]) -> list[str]:
        """Validate the prompt and options (``None`` = not given); return the option flags."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("prompt must be a non-empty string")
        if "\x00" in prompt:
            raise InvalidRequest("prompt must not contain NUL characters")
        flags: list[str] = []
        for name, value in options.items():
            if value is None:
                continue
            build = self.options.get(name)
            if build is None:
                supported = ", ".join(sorted(self.options)) or "none"
                raise InvalidRequest(
                    f"option {name!r} is not supported by agent profile {self.name!r} "
                    f"(supported: {supported})")
            try:
                flags += build(value)
            except ValueError as exc:
                raise InvalidRequest(f"option {name!r} for profile {self.name!r} {exc}, "
                                     f"got {_short(repr(value), 80)}") from None
        return flags

    def invocation(self, executable: str, prompt: str, options: Mapping[str, Any]) -> Invocation:
        argv = [executable, *self.head, *self.check(prompt, options)]
        data = prompt.encode()
        if len(data) > ARGV_PROMPT_LIMIT:
            return Invocation(argv + list(self.stdin_args), stdin=data)
        return Invocation(argv + self.prompt_args(prompt))


# --- reading answers -------------------------------------------------------------
def _short(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size] + "..."


def tail(text: str, size: int = TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= size else "..." + text[-size:]


def _json_object(stdout: str) -> dict | None:
    """The JSON object printed on stdout; tolerates log lines before it."""
    text = stdout.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
        for line in reversed(text.splitlines()):
            try:
                data = json.loads(line)
                break
            except ValueError:
                continue
    if isinstance(data, list):  # claude with --verbose or hooks prints every event
        data = next((item for item in reversed(data)
                     if isinstance(item, dict) and item.get("type") == "result"), None)
    return data if isinstance(data, dict) else None


def failure_message(profile: str, outcome: Outcome, problem: str, **facts: Any) -> str:
    details = ", ".join(f"{key} {value}" for key, value in facts.items() if value is not None)
    parts = [f"{profile} {problem} (exit code {outcome.exit_code}"
             + (f", {details}" if details else "") + ")"]
    if outcome.stderr.strip():
        parts.append(f"stderr: {tail(outcome.stderr)}")
    if outcome.stdout.strip():
        parts.append(f"stdout: {tail(outcome.stdout)}")
    return "\n".join(parts)


def _looks_rate_limited(*texts: Any) -> bool:
    return any(isinstance(text, str) and _RATE_LIMIT_TEXT.search(text) for text in texts)


def parse_claude(outcome: Outcome) -> dict:
    payload = _json_object(outcome.stdout)
    if payload is None or payload.get("type") != "result":
        if outcome.exit_code != 0 and _looks_rate_limited(outcome.stderr, outcome.stdout):
            raise AgentRateLimited(failure_message("claude", outcome, "was rate limited"))
        raise AgentError(failure_message("claude", outcome, "printed no JSON result"))
    text = payload.get("result") if isinstance(payload.get("result"), str) else ""
    subtype = payload.get("subtype")
    is_error = bool(payload.get("is_error"))
    status = payload.get("api_error_status")
    failed = outcome.exit_code != 0 or is_error or subtype != "success"
    facts = dict(subtype=subtype, is_error=is_error, api_error_status=status,
                 session_id=payload.get("session_id"), cost_usd=payload.get("total_cost_usd"))
    if (status in RATE_LIMIT_STATUSES or _USAGE_LIMIT_ANSWER.match(text)
            or (failed and _looks_rate_limited(text, outcome.stderr))):
        raise AgentRateLimited(failure_message("claude", outcome, "was rate limited", **facts))
    if failed:
        raise AgentError(failure_message("claude", outcome, "run failed", **facts))
    duration_ms = payload.get("duration_ms")
    return {
        "result": text,
        "is_error": False,
        "subtype": subtype,
        "cost_usd": payload.get("total_cost_usd"),
        "session_id": payload.get("session_id"),
        "num_turns": payload.get("num_turns"),
        "usage": payload.get("usage"),
        "cli_duration_s": duration_ms / 1000 if isinstance(duration_ms, (int, float)) else None,
    }


def parse_gemini(outcome: Outcome) -> dict:
    """``gemini --output-format json``: ``response``, ``stats``, optional ``error``."""
    payload = _json_object(outcome.stdout)
    error = payload.get("error") if payload else None
    if payload is None or error or outcome.exit_code != 0:
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        if code in RATE_LIMIT_STATUSES or _looks_rate_limited(message, outcome.stderr):
            raise AgentRateLimited(failure_message("gemini", outcome, "was rate limited",
                                                   error=message))
        problem = "printed no JSON result" if payload is None else "run failed"
        raise AgentError(failure_message("gemini", outcome, problem, error=message))
    response = payload.get("response")
    return {
        "result": response if isinstance(response, str) else "",
        "is_error": False,
        "subtype": "success",
        "cost_usd": None,
        "session_id": payload.get("session_id"),
        "num_turns": None,
        "usage": payload.get("stats"),
    }


def parse_codex(outcome: Outcome) -> dict:
    """``codex exec``: progress on stderr, only the final message on stdout."""
    if outcome.exit_code != 0:
        if _looks_rate_limited(outcome.stderr, outcome.stdout):
            raise AgentRateLimited(failure_message("codex", outcome, "was rate limited"))
        raise AgentError(failure_message("codex", outcome, "run failed"))
    return {"result": outcome.stdout.strip(), "is_error": False, "subtype": "success",
            "cost_usd": None, "session_id": None, "num_turns": None, "usage": None}


# --- the registry -------------------------------------------------------------------
PROFILES: dict[str, Profile] = {
    "claude": Profile(
        name="claude",
        options={
            "model": _text("--model"),
            "max_turns": _positive_int("--max-turns"),
            "allowed_tools": _tool_list("--allowedTools"),
            "permission_mode": _text("--permission-mode"),
            "append_system_prompt": _text("--append-system-prompt"),
        },
        head=("-p", "--output-format", "json"),
        # "--" ends the options: a prompt starting with "-" stays a prompt and the
        # variadic --allowedTools cannot swallow it.
        prompt_args=lambda prompt: ["--", prompt],
        stdin_args=(),
        parse=parse_claude,
    ),
    "codex": Profile(
        name="codex",
        options={"model": _text("--model")},
        # Turbo runs in a directory the caller chose, git repository or not.
        head=("exec", "--skip-git-repo-check"),
        prompt_args=lambda prompt: ["--", prompt],
        stdin_args=("-",),
        parse=parse_codex,
    ),
    "gemini": Profile(
        name="gemini",
        options={"model": _text("--model")},
        head=("--output-format", "json"),
        # "--prompt=..." keeps a prompt that starts with "-" a value.
        prompt_args=lambda prompt: [f"--prompt={prompt}"],
        stdin_args=(),  # headless on a non-TTY: the prompt is read from stdin
        parse=parse_gemini,
    ),
}


def get_profile(name: Any) -> Profile:
    profile = PROFILES.get(name) if isinstance(name, str) else None
    if profile is None:
        raise InvalidRequest(
            f"unknown agent profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}")
    return profile
