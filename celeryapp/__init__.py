"""Agent Turbo: Celery on Redis for SQL queries and headless agent runs.

``celery -A celeryapp worker`` finds :data:`app` here. The app is built on
first use, so importing ``celeryapp.config`` or the lean helpers does not
pay for importing Celery (and reads the environment only when needed).

Building it also imports what runs beside the tasks, so that every
``celery -A celeryapp ...`` command knows it: the custom inspect/control
commands and the worker hooks (:mod:`celeryapp.worker`), the agent cost
counters (:mod:`celeryapp.monitoring.metrics`) and Flower's configuration.
"""
from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: the shell path counts milliseconds

if TYPE_CHECKING:
    from celery import Celery

    app: Celery


def __getattr__(name: str):
    if name == "app":
        from .factory import app
        from .monitoring import metrics  # noqa: F401  (agent cost and run counters)
        from .monitoring.flower import use_project_config
        from .worker import control, hooks, logs  # noqa: F401  (inspect; flows, notices; masked log)

        use_project_config(app)  # `celery -A celeryapp flower` loads monitoring/flowerconfig.py
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'celeryapp' has no attribute {name!r}")


__all__ = ["app"]
