"""The ``gemini`` profile: ``gemini --output-format json --skip-trust``, prompt on stdin.

It prints one pretty-printed JSON object (``session_id``, ``response``, ``stats``)
on success; a failed run prints nothing on stdout and its error as JSON
(``{"session_id", "error": {"type", "message", "code"}}``) last on **stderr**, after
its retry log and a stack trace, and exits with the HTTP code & 0xFF (429 -> 173,
401 -> 145, 500 -> 244; 41: no auth method, 42: no input, 55: untrusted folder).

Gemini refuses to run headless in a folder it does not trust (exit 55). The worker
runs it only in the run's own directory - a scratch directory, or a ``cwd`` under
``TURBO_AGENT_CWD_ROOTS``, both the operator's - so it says ``--skip-trust`` for that
directory alone (the user's trustedFolders.json is not touched).
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..errors import AgentError
from .outcome import Outcome, facts, failure, message

ENV = ("GEMINI_*", "GOOGLE_API_KEY", "GOOGLE_GEMINI_*", "GOOGLE_GENAI_*", "GOOGLE_CLOUD_PROJECT",
       "GOOGLE_CLOUD_LOCATION")


def json_object(text: str, last: bool = False) -> dict | None:
    """The (first or last) JSON object printed, pretty or on one line, among other
    lines: log lines before it, stack traces around it."""
    text = (text or "").strip()
    found = None
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            data, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(data, dict):
            if not last:
                return data
            found = data
        start = text.find("{", end)
    return found


def argv(executable: str, options: dict[str, Any], session_id: str | None,
         workdir: str) -> list[str]:
    # the prompt comes on stdin (never argv); headless because stdin is not a TTY
    args = [executable, "--output-format", "json", "--skip-trust"]
    if options.get("model"):
        args += ["--model", options["model"]]
    if options.get("permission_mode"):
        args += ["--approval-mode", options["permission_mode"]]
    return args


def env_fixed(caps: Any) -> dict[str, str]:
    """No colour codes in its errors. (Its own retries, ``general.maxAttempts``, are
    read from settings files only - no flag, no variable, and a system defaults file
    outside a root-owned directory is refused - so the operator sets them in the
    worker user's ``~/.gemini/settings.json``; the task's timeout bounds a run anyway.)"""
    # one process, not a relaunched child (its parent ignores SIGTERM)
    return {"NO_COLOR": "1", "GEMINI_CLI_NO_RELAUNCH": "true"}


def _error(payload: dict | None) -> tuple[str | None, Any]:
    error = payload.get("error") if payload else None
    if isinstance(error, dict):
        return error.get("message"), error.get("code")
    return (str(error) if error else None), None


_NOISE = ("Warning: 256-color", "Ripgrep is not available", "[STARTUP]", "    at ")


def _last_words(stderr: str) -> str | None:
    """The last line of stderr that is not start-up noise or a stack frame."""
    lines = [line.strip() for line in (stderr or "").splitlines()
             if line.strip() and not line.startswith(_NOISE)]
    return lines[-1] if lines else None


_ATTEMPT = re.compile(r"^Attempt (\d+) failed", re.MULTILINE)
_CODE = re.compile(r'"code"\s*:\s*(\d{3})')


def _api_calls(payload: dict | None, stderr: str) -> int | None:
    """Requests to the API: its own count on success, the failed attempts it logged."""
    models = ((payload or {}).get("stats") or {}).get("models")
    if isinstance(models, dict) and models:
        return sum(int(((m.get("api") or {}).get("totalRequests")) or 0)
                   for m in models.values() if isinstance(m, dict))
    attempts = [int(n) for n in _ATTEMPT.findall(stderr or "")]
    return max(attempts) if attempts else None


def _details(payload: dict | None, exit_code: int | None, status: Any = None,
             stderr: str = "") -> dict:
    payload = payload or {}
    stats = payload.get("stats") if isinstance(payload.get("stats"), dict) else None
    return facts(profile="gemini", session_id=payload.get("session_id"), usage=stats,
                 api_calls=_api_calls(payload, stderr),
                 api_error_status=status if isinstance(status, int) else None,
                 exit_code=exit_code)


def parse(outcome: Outcome) -> dict:
    payload = json_object(outcome.stdout)
    said, code = _error(payload)
    if said is None:  # gemini prints its error JSON last on stderr
        error_payload = json_object(outcome.stderr, last=True)
        said, code = _error(error_payload)
        payload = payload or (error_payload if said else None)
    if said is None and outcome.exit_code != 0:
        said = _last_words(outcome.stderr)
    if not (isinstance(code, int) and 100 <= code <= 599):
        code = None  # gemini's own exit codes (1, 41, 42, 52, 55) are no HTTP status
    found = _details(payload, outcome.exit_code, code, outcome.stderr)
    if said or outcome.exit_code != 0 or payload is None:
        if said is None and payload is None and outcome.exit_code == 0:
            raise AgentError(message("gemini", outcome, "printed no JSON result"), found)
        raise failure("gemini", outcome, found, code, said, outcome.stderr)
    response = payload.get("response")
    return {"result": response if isinstance(response, str) else "", "is_error": False,
            **found}


def partial(outcome: Outcome) -> dict[str, Any]:
    """A run cut short: the API errors it was retrying, from its log on stderr."""
    codes = _CODE.findall(outcome.stderr or "")
    return _details(json_object(outcome.stdout), None, int(codes[-1]) if codes else None,
                    outcome.stderr)
