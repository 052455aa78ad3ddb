"""The errors tasks raise, as documented in the README (``from tasks.errors import ...``).

They are defined in :mod:`celeryapp.core.errors` so that the submit side (``delay()``,
``turbo``, the flow engine) raises the same classes without importing tasks.
"""
from celeryapp.core.errors import (
    AgentAuthError,
    AgentError,
    AgentNotFound,
    AgentRateLimited,
    AgentTurnLimit,
    AgentUnavailable,
    EngineNotConfigured,
    EngineUnavailable,
    InvalidRequest,
    PermanentError,
    QueryError,
    SlotsBusy,
    TaskCrashed,
    TaskTimeout,
    TransientError,
    TurboError,
)

__all__ = ["AgentAuthError", "AgentError", "AgentNotFound", "AgentRateLimited",
           "AgentTurnLimit", "AgentUnavailable", "EngineNotConfigured",
           "EngineUnavailable", "InvalidRequest", "PermanentError", "QueryError", "SlotsBusy",
           "TaskCrashed", "TaskTimeout", "TransientError", "TurboError"]
