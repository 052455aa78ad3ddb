"""What a caller may ask of an agent run, checked at the door (``delay()`` and ``turbo``).

One table per agent profile: the options it takes and what each value must be.
The worker checks the same table again, once, with its operator's caps
(``tasks.agents.request``); these checks are only the shape of a request, so a
bad one is refused before it travels through Redis. Standard library only (the
``turbo`` shell path imports it).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidRequest

PROFILE_NAMES = ("claude", "codex", "gemini")
DEFAULT_PROFILE = "claude"
TEXT_LIMIT = 100 * 1024  # bytes, for model names and system prompts

# `claude --permission-mode` accepts exactly these (2.1.x; an unknown one exits 1).
CLAUDE_PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk",
                           "plan")
# `codex exec --sandbox`
CODEX_PERMISSION_MODES = ("read-only", "workspace-write", "danger-full-access")
# `gemini --approval-mode`
GEMINI_PERMISSION_MODES = ("default", "auto_edit", "yolo", "plan")

_SESSION_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{12}$")

Check = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if len(value.encode()) > TEXT_LIMIT:
        raise ValueError(f"must be at most {TEXT_LIMIT} bytes")
    return value


def _name(value: Any) -> str:
    """A model name: one word, no leading dash (it travels as a flag's value)."""
    value = _text(value)
    if value.startswith("-") or any(c.isspace() for c in value) or len(value) > 200:
        raise ValueError("must be one word of at most 200 characters, not starting with '-'")
    return value


def _turns(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a whole number >= 1")
    return value


def _tools(value: Any) -> list[str]:
    """Tool rules (``"Bash(git log:*)"``, ``"Edit"``): a list of strings, or one string."""
    tools = [value] if isinstance(value, str) else value
    if (not isinstance(tools, (list, tuple)) or not tools
            or not all(isinstance(tool, str) and tool.strip() and "\x00" not in tool
                       and not tool.strip().startswith("-") for tool in tools)):
        raise ValueError("must be a non-empty list of tool names (strings)")
    return [tool.strip() for tool in tools]


def _choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return check


def _session_id(value: Any) -> str:
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise ValueError("must be a session id as the CLI printed it (a UUID)")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


# Run options every profile takes (they shape the run, not the CLI's argv).
RUN_OPTIONS: dict[str, Check] = {"keep_workdir": _flag, "keep_session": _flag}

PROFILE_OPTIONS: dict[str, dict[str, Check]] = {
    "claude": {
        "model": _name,
        "max_turns": _turns,
        "allowed_tools": _tools,
        "permission_mode": _choice(CLAUDE_PERMISSION_MODES),
        "append_system_prompt": _text,
        "resume": _session_id,
    },
    "codex": {
        "model": _name,
        "permission_mode": _choice(CODEX_PERMISSION_MODES),
        "resume": _session_id,
    },
    "gemini": {
        "model": _name,
        "permission_mode": _choice(GEMINI_PERMISSION_MODES),
    },
}

OPTION_NAMES = tuple(sorted({name for table in PROFILE_OPTIONS.values() for name in table}
                            | set(RUN_OPTIONS)))
"""Every agent option any profile takes (``run_agent``'s keyword arguments)."""


def check_profile(name: Any) -> str:
    if name not in PROFILE_NAMES:
        raise InvalidRequest(f"unknown agent profile {name!r}; known profiles: "
                             f"{', '.join(PROFILE_NAMES)}")
    return name


def check_prompt(prompt: Any, limit: int | None = None) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt must be a non-empty string")
    if "\x00" in prompt:
        raise InvalidRequest("prompt must not contain NUL characters")
    if limit is not None and len(prompt.encode()) > limit:
        raise InvalidRequest(f"prompt is {len(prompt.encode())} bytes; the limit is {limit} "
                             f"bytes (TURBO_AGENT_MAX_PROMPT_BYTES)")
    return prompt


def check_options(profile: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The given (not None) options of ``profile``, each checked; InvalidRequest names
    the first bad one."""
    table = {**PROFILE_OPTIONS[check_profile(profile)], **RUN_OPTIONS}
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        check = table.get(name)
        if check is None:
            supported = ", ".join(sorted(table))
            raise InvalidRequest(f"option {name!r} is not supported by agent profile "
                                 f"{profile!r} (supported: {supported})")
        try:
            checked[name] = check(value)
        except ValueError as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:80] + "..."
            raise InvalidRequest(f"option {name!r} for profile {profile!r} {exc}, "
                                 f"got {shown}") from None
    if checked.get("resume") and checked.get("keep_session") is False:
        raise InvalidRequest("resume continues a kept session: it cannot be combined with "
                             "keep_session=false")
    return checked


def check_request(prompt: Any, profile: Any, options: Mapping[str, Any],
                  prompt_limit: int | None = None) -> dict[str, Any]:
    """Prompt, profile and options of one agent run; the checked options."""
    check_prompt(prompt, prompt_limit)
    return check_options(check_profile(profile), options)
