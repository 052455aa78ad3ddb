"""Error types shared by runners, tasks and the submit side (re-exported by tasks.errors).

Permanent errors fail a task at once; transient ones are retried with backoff.
Each takes one message string so Celery's JSON result backend can rebuild it.
"""
from __future__ import annotations


class TurboError(Exception):
    """Base of every error Agent Turbo raises on purpose."""


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


class AgentError(PermanentError):
    """The agent CLI failed: non-zero exit, is_error, malformed output."""


class AgentNotFound(PermanentError):
    """The agent executable is not installed on this worker."""


class AgentRateLimited(TransientError):
    """The agent's API answered with a rate limit or overload (429/529)."""


class SlotsBusy(TransientError):
    """Every agent slot on this host is taken; the task waits its turn."""
