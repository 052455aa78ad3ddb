"""Celery tasks (thin) and the runners they call (no Celery import)."""
