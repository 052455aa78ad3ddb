"""Agent Turbo: Celery on Redis for SQL queries and headless agent runs.

``celery -A celeryapp worker`` finds :data:`app` here.
"""
from .app import app

__all__ = ["app"]
