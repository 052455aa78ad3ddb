"""Error types shared by runners, tasks and the submit side (re-exported by tasks.errors).

Permanent errors fail a task at once; transient ones are retried with backoff.
Each takes a message and, optionally, ``details``: a JSON-able dict of facts the
caller may act on (an agent run's session id, turns, cost, usage). Both travel
as the exception's ``args``, so Celery's JSON result backend rebuilds the same
error with the same ``details`` on the caller's side.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TurboError(Exception):
    """Base of every error Agent Turbo raises on purpose."""

    def __init__(self, message: str = "", details: Mapping[str, Any] | None = None):
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(*((message, self.details) if self.details else (message,)))

    def add_details(self, **facts: Any) -> TurboError:
        """More facts for the caller (kept in ``args``, so they reach the caller)."""
        self.details.update(facts)
        if self.details:
            self.args = (self.message, self.details)
        return self

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message


class PermanentError(TurboError):
    """Retrying cannot help: bad input, bad SQL, a missing executable."""


class TransientError(TurboError):
    """May succeed later: connection loss, 429/503, a warehouse starting, a lock."""


class InvalidRequest(PermanentError):
    """The task's arguments are wrong (unknown engine, bad option, bad params)."""


class QueryError(PermanentError):
    """The engine rejected the statement (syntax, missing table, bad parameters)."""


class EngineUnavailable(TransientError):
    """The engine could not be reached or is busy right now."""


class EngineNotConfigured(PermanentError):
    """The engine lacks its settings on this worker (e.g. DATABRICKS_* unset)."""


class TaskTimeout(PermanentError):
    """The work ran past its deadline and was cancelled at the source."""


class TaskCrashed(PermanentError):
    """The worker process running the task died again and again (a poison message)."""


class AgentError(PermanentError):
    """The agent CLI failed: non-zero exit, is_error, malformed output."""


class AgentNotFound(PermanentError):
    """The agent executable is not installed on this worker."""


class AgentTurnLimit(AgentError):
    """The run stopped at its ``max_turns``; ``details["session_id"]`` resumes it."""


class AgentAuthError(AgentError):
    """The agent's API refused its credentials (401/403): fix the key, not a retry."""


class AgentRateLimited(TransientError):
    """The agent's API answered with a rate limit or overload (429/529)."""


class AgentUnavailable(TransientError):
    """The agent's API could not be reached or failed on its side (5xx, no connection)."""


class SlotsBusy(TransientError):
    """Every agent slot on this host is taken; the task waits its turn."""
