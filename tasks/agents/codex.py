"""The ``codex`` profile: ``codex exec --json``, prompt on stdin (``-``).

``--json`` prints JSON lines (0.171): ``thread.started`` (the session id),
``turn.started``, ``item.completed`` (the agent's messages; an item of type
``error`` is a warning, not a failure), ``turn.completed`` (usage, cumulative over
a resumed thread), and on failure ``error`` events - ``Reconnecting... n/5 (...)``
while the CLI retries on its own - then ``turn.failed``, exit 1, all on stdout.
Its texts: ``exceeded retry limit, last status: 429 Too Many Requests``,
``unexpected status 401 Unauthorized: ...``, ``We're currently experiencing high
demand`` (5xx), ``stream disconnected before completion``, ``Connection failed:
error sending request`` (no network).

Its retries: the built-in ``openai`` provider's loops (5 stream retries, 4 request
retries) cannot be configured (codex refuses to override a built-in provider), but
the loop that never ends can: with no network codex waits "Reconnecting...
waiting for network" forever unless ``features.unbounded_connection_retries`` is
off, which the worker always sets. A provider of the operator's own
(``model_provider`` in ``$CODEX_HOME/config.toml``) takes ``stream_max_retries``
and ``request_max_retries`` there. ``--ephemeral`` keeps no session files
(``keep_session`` keeps them; ``resume`` continues one with ``exec resume``).
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import AgentError
from .events import JsonLines
from .outcome import Outcome, facts, failure, message

ENV = ("OPENAI_*", "CODEX_*", "AZURE_OPENAI_*")
_STATUS = re.compile(r"last status: (\d{3})|\b(\d{3}) (?:Too Many Requests|Unauthorized|Forbidden"
                     r"|Internal Server Error|Bad Gateway|Service Unavailable)")


class CodexEvents:
    """The facts of one run, read from its JSON lines as they come."""

    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []  # error items: the CLI went on
        self.reconnects = 0
        self.turns = 0
        self.usage: dict[str, int] = {}
        self.failed: str | None = None
        self.completed = False

    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "thread.started":
            self.thread_id = event.get("thread_id") or self.thread_id
        elif kind == "turn.started":
            self.turns += 1
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self.messages.append(item["text"])
            elif item.get("type") == "error" and isinstance(item.get("message"), str):
                self.warnings.append(item["message"])
        elif kind == "turn.completed":
            self.completed = True
            for key, value in (event.get("usage") or {}).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self.usage[key] = self.usage.get(key, 0) + value
        elif kind == "error":
            text = str(event.get("message") or "")
            if text.startswith("Reconnecting"):
                self.reconnects += 1
            else:
                self.errors.append(text)
        elif kind == "turn.failed":
            error = event.get("error") or {}
            self.failed = str(error.get("message") if isinstance(error, dict) else error)


def reader() -> JsonLines:
    return JsonLines(CodexEvents())


def argv(executable: str, options: dict[str, Any], session_id: str | None,
         workdir: str) -> list[str]:
    args = [executable, "exec"]
    if options.get("resume"):  # `exec resume` takes no --cd/--sandbox: cwd and defaults
        args += ["resume"]
    else:
        args += ["--cd", workdir]
        if options.get("permission_mode"):
            args += ["--sandbox", options["permission_mode"]]
    # no network: fail (and be retried by the task) instead of waiting forever
    args += ["--json", "--skip-git-repo-check", "-c", "features.unbounded_connection_retries=false"]
    if not options.get("keep_session") and not options.get("resume"):
        args.append("--ephemeral")
    if options.get("model"):
        args += ["--model", options["model"]]
    if options.get("resume"):
        args.append(options["resume"])
    args.append("-")  # the prompt from stdin
    return args


def env_fixed(caps: Any) -> dict[str, str]:
    return {}


def _status(*texts: str | None) -> int | None:
    for text in texts:
        match = _STATUS.search(text or "")
        if match:
            return int(match.group(1) or match.group(2))
    return None


def details(events: CodexEvents, exit_code: int | None, status: int | None = None) -> dict:
    return facts(profile="codex", session_id=events.thread_id, num_turns=events.turns or None,
                 usage=events.usage or None, api_retries=events.reconnects,
                 api_error_status=status, exit_code=exit_code,
                 errors=events.errors or None)


def parse(outcome: Outcome) -> dict:
    events: CodexEvents = outcome.events
    said = events.failed or (events.errors[-1] if events.errors else None)
    status = _status(said, outcome.stderr)
    found = details(events, outcome.exit_code, status)
    if outcome.exit_code != 0 or events.failed:
        raise failure("codex", outcome, found, status, said, outcome.stderr)
    if not events.completed:
        raise AgentError(message("codex", outcome, "ended without completing its turn"), found)
    return {"result": events.messages[-1] if events.messages else "", "is_error": False,
            **found}


def partial(outcome: Outcome) -> dict[str, Any]:
    events: CodexEvents = outcome.events
    return details(events, None, _status(events.failed, *events.errors[-1:], outcome.stderr))
