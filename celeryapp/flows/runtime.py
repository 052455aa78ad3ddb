"""The Celery app and the workflow store that the workflow modules share, built on first
use: ``turbo submit flow`` validates a workflow without paying for Celery."""
from __future__ import annotations

from collections.abc import Mapping

from ..config import get_settings
from .store import FlowStore


def app():
    """The Celery app, built from the environment on first use."""
    from ..factory import app

    return app


def store() -> FlowStore:
    """The workflow store on the result backend's Redis."""
    settings = get_settings()
    return FlowStore(app().backend.client, settings.result_expires, settings.flow_retry_seconds)


def known_tasks(data: Mapping | None) -> set[str] | None:
    """Registered task names, only when the spec has ``task:`` steps (it costs a Celery import)."""
    steps = (data or {}).get("steps") or {}
    if not any(isinstance(body, Mapping) and "task" in body for body in steps.values()):
        return None
    app().loader.import_default_modules()
    return set(app().tasks)
