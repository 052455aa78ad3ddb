"""The ``gemini`` profile: ``gemini --output-format json``, prompt on stdin.

It prints one JSON object (``response``, ``stats``, ``session_id``) on success,
and its error as JSON (``{"error": {"type", "message", "code"}}``) on **stderr**
when a run fails - both are read. Gemini refuses to run in a folder it does not
trust; the worker trusts only the run's own directory (a scratch directory, or a
``cwd`` under ``TURBO_AGENT_CWD_ROOTS``).
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import AgentError
from .outcome import Outcome, facts, failure, message

ENV = ("GEMINI_*", "GOOGLE_API_KEY", "GOOGLE_GEMINI_*", "GOOGLE_GENAI_*", "GOOGLE_CLOUD_PROJECT",
       "GOOGLE_CLOUD_LOCATION")


def json_object(text: str) -> dict | None:
    """The JSON object printed (pretty or on one line), tolerating lines before it."""
    text = (text or "").strip()
    if not text:
        return None
    start = text.find("{")
    while start >= 0:
        try:
            data, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(data, dict):
            return data
        start = text.find("{", start + 1)
    return None


def argv(executable: str, options: dict[str, Any], session_id: str | None,
         workdir: str) -> list[str]:
    args = [executable, "--output-format", "json"]
    if options.get("model"):
        args += ["--model", options["model"]]
    if options.get("permission_mode"):
        args += ["--approval-mode", options["permission_mode"]]
    return args


def env_fixed(max_retries: int) -> dict[str, str]:
    return {}


def _error(payload: dict | None) -> tuple[str | None, Any]:
    error = payload.get("error") if payload else None
    if isinstance(error, dict):
        return error.get("message"), error.get("code")
    return (str(error) if error else None), None


def _details(payload: dict | None, exit_code: int | None, status: Any = None) -> dict:
    payload = payload or {}
    stats = payload.get("stats") if isinstance(payload.get("stats"), dict) else None
    return facts(profile="gemini", session_id=payload.get("session_id"), usage=stats,
                 api_error_status=status if isinstance(status, int) else None,
                 exit_code=exit_code)


def parse(outcome: Outcome) -> dict:
    payload = json_object(outcome.stdout)
    said, code = _error(payload)
    if said is None:  # gemini prints its error JSON on stderr
        said, code = _error(json_object(outcome.stderr))
    found = _details(payload, outcome.exit_code, code)
    if payload is None or said or outcome.exit_code != 0:
        if said is None and payload is None and outcome.exit_code == 0:
            raise AgentError(message("gemini", outcome, "printed no JSON result"), found)
        raise failure("gemini", outcome, found, code if isinstance(code, int) else None,
                      said, outcome.stderr)
    response = payload.get("response")
    return {"result": response if isinstance(response, str) else "", "is_error": False,
            **found}


def partial(outcome: Outcome) -> dict[str, Any]:
    return _details(json_object(outcome.stdout), None)
