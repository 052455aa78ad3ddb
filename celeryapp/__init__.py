"""Agent Turbo: Celery on Redis for SQL queries and headless agent runs.

``celery -A celeryapp worker`` finds :data:`app` here. The app is built on
first use, so importing ``celeryapp.config`` or the lean helpers does not
pay for importing Celery (and reads the environment only when needed).
"""
from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: the shell path counts milliseconds

if TYPE_CHECKING:
    from celery import Celery

    app: Celery


def __getattr__(name: str):
    if name == "app":
        from .factory import app

        return app
    raise AttributeError(f"module 'celeryapp' has no attribute {name!r}")


__all__ = ["app"]
