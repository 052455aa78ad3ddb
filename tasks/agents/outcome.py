"""What a finished (or cut short) agent CLI run left behind, and how a failure is classed.

Every outcome keeps what was paid for: the profiles' parsers return, and put in
every error's ``details``, the same fields (:data:`FIELDS`): session id (to resume),
turns, cost, usage, API calls and the CLI's own stop reason. Failures are classed
once, here, from the API status the CLI reported, its exit code and its texts:

=====================  ==================  =========================================
what the API said      error               the task
=====================  ==================  =========================================
429, 529, rate limit   AgentRateLimited    retried with backoff, within the timeout
5xx, no connection     AgentUnavailable    retried with backoff, within the timeout
401, 403, bad key      AgentAuthError      fails at once
turn limit             AgentTurnLimit      fails at once; resumable by session id
anything else          AgentError          fails at once
=====================  ==================  =========================================
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import AgentAuthError, AgentError, AgentRateLimited, AgentUnavailable, TurboError

TAIL_CHARS = 1500
FIELDS = ("session_id", "num_turns", "cost_usd", "usage", "model_usage", "api_calls",
          "api_retries", "api_error_status", "subtype", "stop_reason", "terminal_reason",
          "exit_code", "errors")
"""The structured facts of an outcome, in results and in errors' ``details``.
``api_calls``: the API requests this attempt made or tried, the CLI's own retries
included (a refused connection counts; a request still in flight when a timeout
cut the run short does not); None where the CLI does not tell (codex)."""

RATE_LIMIT_STATUSES = frozenset({429, 529})
AUTH_STATUSES = frozenset({401, 403})

_RATE_LIMIT_TEXT = re.compile(
    r"rate[ _-]?limit|usage limit|hit your limit|overloaded|quota exceeded|resource_exhausted"
    r"|too many requests|exceeded your current quota|RetryableQuotaError"
    r"|(?:status|code)\W{0,3}(?:429|529)\b|\((?:429|529)\)|API Error: (?:429|529)\b",
    re.IGNORECASE)
_AUTH_TEXT = re.compile(
    r"invalid (?:x-)?api[ _-]?key|authentication_error|permission_error|unauthori[sz]ed"
    r"|(?:status|code)\W{0,3}(?:401|403)\b|\((?:401|403)\)|API Error: (?:401|403)\b"
    r"|please run /login|oauth token has expired|api key not valid|auth method"
    r"|permission[_ ]denied|forbidden|unauthenticated|missing environment variable",
    re.IGNORECASE)
_UNAVAILABLE_TEXT = re.compile(
    r"unable to connect|connection (?:error|refused|reset|failed)|econnrefused|econnreset|enotfound"
    r"|etimedout|fetch failed|network error|socket hang up|stream disconnected"
    r"|(?:status|code)\W{0,3}5\d\d\b|API Error: 5\d\d\b|api_error|internal server error"
    r"|service unavailable|bad gateway|gateway timeout"
    r"|error sending request|timed out|high demand|temporar(?:il)?y unavailable",
    re.IGNORECASE)


@dataclass(frozen=True)
class Outcome:
    """A finished CLI process: exit code, stdout (text, or its tail for event
    streams), stderr's tail, and the profile's reading of its events (if any)."""
    exit_code: int
    stdout: str
    stderr: str
    events: Any = None


def tail(text: str, size: int = TAIL_CHARS) -> str:
    text = (text or "").strip()
    return text if len(text) <= size else "..." + text[-size:]


def facts(**values: Any) -> dict[str, Any]:
    """The outcome fields, every one present (None where unknown)."""
    unknown = set(values) - set(FIELDS) - {"profile", "result", "model", "cli_duration_s"}
    if unknown:
        raise TypeError(f"not outcome fields: {sorted(unknown)}")
    return {name: values.get(name) for name in FIELDS} | {
        key: value for key, value in values.items() if key not in FIELDS}


def message(profile: str, outcome: Outcome, problem: str, said: str | None = None) -> str:
    """One readable failure text: what happened, what the CLI said, its output tails."""
    parts = [f"{profile} {problem} (exit code {outcome.exit_code})"]
    if said:
        parts.append(f"the CLI said: {tail(said, 500)}")
    if outcome.stderr.strip():
        parts.append(f"stderr: {tail(outcome.stderr)}")
    if outcome.stdout.strip() and not said:
        parts.append(f"stdout: {tail(outcome.stdout)}")
    return "\n".join(parts)


def error_class(status: Any, *texts: Any) -> type[TurboError]:
    """The error for a failed run from the API status (if the CLI reported one) or,
    failing that, from what it printed."""
    if isinstance(status, int) and not isinstance(status, bool):
        if status in RATE_LIMIT_STATUSES:
            return AgentRateLimited
        if status in AUTH_STATUSES:
            return AgentAuthError
        if status >= 500 or status == 408:
            return AgentUnavailable
        return AgentError
    said = "\n".join(text for text in texts if isinstance(text, str))
    if _RATE_LIMIT_TEXT.search(said):
        return AgentRateLimited
    if _AUTH_TEXT.search(said):
        return AgentAuthError
    if _UNAVAILABLE_TEXT.search(said):
        return AgentUnavailable
    return AgentError


PROBLEMS = {AgentRateLimited: "was rate limited", AgentAuthError: "was refused by its API",
            AgentUnavailable: "could not reach its API", AgentError: "run failed"}


def failure(profile: str, outcome: Outcome, details: dict, status: Any = None,
            said: str | None = None, *texts: Any) -> TurboError:
    """The classified error of a failed run, with its details."""
    cls = error_class(status, said, *texts)
    return cls(message(profile, outcome, PROBLEMS.get(cls, "run failed"), said), details)
