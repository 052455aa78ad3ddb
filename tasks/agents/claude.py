"""The ``claude`` profile: ``claude -p --output-format stream-json --verbose``, prompt on stdin.

The event stream, not the single JSON answer, because it tells what the answer
alone does not: the session id from the first event (so a run cut short by its
timeout still names its session), every retry the CLI made on its own
(``system/api_retry``: the API calls a run cost), and the usage turn by turn.
The final ``result`` event is the answer. What the real CLI (2.1.x) prints:

* success: exit 0, ``subtype: success``, ``is_error: false``, ``result``;
* an API error after its retries: exit 1, ``subtype: success``, ``is_error: true``,
  ``api_error_status`` (429, 529, 401, 500 ... or null when unreachable) and a
  ``result`` text like ``API Error: Request rejected (429) · ...``;
* the turn limit: exit 1, ``subtype: error_max_turns``, no ``result``, ``errors``.

``CLAUDE_CODE_MAX_RETRIES`` bounds the CLI's own retry loop (10 tries over ~3
minutes by default) so the task's backoff and timeout decide.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import AgentError, AgentRateLimited, AgentTurnLimit
from .events import JsonLines
from .outcome import Outcome, facts, failure, message

ENV = ("ANTHROPIC_*", "CLAUDE_*", "DISABLE_*", "MAX_THINKING_TOKENS", "MCP_*", "BASH_*",
       "API_TIMEOUT_MS", "USE_BUILTIN_RIPGREP")
"""The worker's variables a claude run sees (its keys, settings and switches)."""
HIDDEN = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_SSE_PORT")
"""Markers of a claude the worker itself runs inside: not the run's business."""
# The whole answer of a run refused for the plan's usage limit, which some
# versions report with is_error false.
_USAGE_LIMIT_ANSWER = re.compile(
    r"^\s*(Claude AI usage limit reached|You['\u2019]ve hit your limit)")


SYNTHETIC = "<synthetic>"


class ClaudeEvents:
    """The facts of one run, read from its stream-json events as they come."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.retries = 0
        self.retry_statuses: list[Any] = []
        self.messages: dict[str, dict] = {}  # assistant message id -> its usage
        self.result: dict | None = None

    def on_event(self, event: dict) -> None:
        kind, subtype = event.get("type"), event.get("subtype")
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if kind == "system" and subtype == "init":
            self.model = event.get("model")
        elif kind == "system" and subtype == "api_retry":
            self.retries += 1
            self.retry_statuses.append(event.get("error_status"))
        elif kind == "assistant":
            inner = event.get("message") or {}
            # one event per content block: count each API answer once; an API error
            # comes as a "<synthetic>" message, which no API call answered
            if isinstance(inner, dict) and inner.get("model") != SYNTHETIC:
                key = str(inner.get("id") or len(self.messages))
                self.messages[key] = inner.get("usage") or {}
        elif kind == "result":
            self.result = event

    def usage(self) -> dict | None:
        """Tokens summed over the API answers seen so far (a run cut short)."""
        if not self.messages:
            return None
        total: dict[str, int] = {}
        for usage in self.messages.values():
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        return total


def reader() -> JsonLines:
    return JsonLines(ClaudeEvents())


def argv(executable: str, options: dict[str, Any], session_id: str | None,
         workdir: str) -> list[str]:
    """The argv of one run; the prompt goes on stdin (never argv: ``ps`` shows argv)."""
    args = [executable, "-p", "--output-format", "stream-json", "--verbose"]
    if options.get("model"):
        args += ["--model", options["model"]]
    if options.get("max_turns"):
        args += ["--max-turns", str(options["max_turns"])]
    if options.get("allowed_tools"):
        args += ["--allowedTools", ",".join(options["allowed_tools"])]
    if options.get("permission_mode"):
        args += ["--permission-mode", options["permission_mode"]]
    if options.get("append_system_prompt"):
        args += ["--append-system-prompt", options["append_system_prompt"]]
    if options.get("resume"):
        args += ["--resume", options["resume"]]
    elif session_id:
        args += ["--session-id", session_id]
    if not options.get("keep_session") and not options.get("resume"):
        args.append("--no-session-persistence")
    return args


def env_fixed(caps: Any) -> dict[str, str]:
    return {"CLAUDE_CODE_MAX_RETRIES": str(caps.cli_max_retries), "DISABLE_AUTOUPDATER": "1"}


def _api_calls(events: ClaudeEvents, failed_call: bool) -> int:
    return len(events.messages) + events.retries + (1 if failed_call else 0)


def details(events: ClaudeEvents, exit_code: int | None) -> dict[str, Any]:
    """The outcome fields of a run, from its result event or what came before it."""
    result = events.result or {}
    status = result.get("api_error_status")
    failed_call = bool(result.get("is_error")) and (
        status is not None or str(result.get("result", "")).startswith("API Error"))
    if not events.result and events.retries:
        failed_call = True  # cut short while retrying
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else events.usage()
    duration_ms = result.get("duration_ms")
    return facts(
        profile="claude",
        session_id=result.get("session_id") or events.session_id,
        num_turns=result.get("num_turns", len(events.messages) or None),
        cost_usd=result.get("total_cost_usd"),
        usage=usage,
        model_usage=result.get("modelUsage"),
        api_calls=_api_calls(events, failed_call),
        api_retries=events.retries,
        api_error_status=status,
        subtype=result.get("subtype"),
        stop_reason=result.get("stop_reason"),
        terminal_reason=result.get("terminal_reason"),
        exit_code=exit_code,
        errors=result.get("errors"),
        model=events.model,
        cli_duration_s=duration_ms / 1000 if isinstance(duration_ms, (int, float)) else None,
    )


def parse(outcome: Outcome) -> dict:
    events: ClaudeEvents = outcome.events
    found = details(events, outcome.exit_code)
    result = events.result
    if result is None:
        # died before its answer: a crash, a refused flag, a broken install
        raise failure("claude", outcome, found, None, None, outcome.stderr) \
            if outcome.exit_code != 0 else AgentError(
                message("claude", outcome, "printed no result event"), found)
    text = result.get("result") if isinstance(result.get("result"), str) else None
    if result.get("subtype") == "error_max_turns":
        raise AgentTurnLimit(message("claude", outcome, (
            f"stopped at its turn limit after {found['num_turns']} turns; resume it with "
            f"resume={found['session_id']!r}"), "; ".join(map(str, found["errors"] or []))),
            found)
    failed = outcome.exit_code != 0 or bool(result.get("is_error")) \
        or result.get("subtype") != "success"
    if failed:
        said = text or "; ".join(map(str, result.get("errors") or [])) or None
        raise failure("claude", outcome, found, result.get("api_error_status"), said,
                      outcome.stderr)
    if text and _USAGE_LIMIT_ANSWER.match(text):
        raise AgentRateLimited(message("claude", outcome, "was rate limited", text), found)
    return {"result": text or "", "is_error": False, **found}


def partial(outcome: Outcome) -> dict[str, Any]:
    """The details of a run cut short (timeout): what the events told so far."""
    return details(outcome.events, None)
