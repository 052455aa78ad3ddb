"""Queues, routes and priority levels.

Each workload has its own queue (the strong tool for ordering on Redis);
within a queue four named priorities map onto Redis priority steps.
"""
from __future__ import annotations

from kombu import Exchange, Queue

from .config import PRIORITIES

QUERY_QUEUE = "queries"
AGENT_QUEUE = "agents"
DEFAULT_QUEUE = "default"
QUEUES = (QUERY_QUEUE, AGENT_QUEUE, DEFAULT_QUEUE)

TASK_ROUTES = {
    "turbo.query": {"queue": QUERY_QUEUE},
    "turbo.agent": {"queue": AGENT_QUEUE},
}

PRIORITY_STEPS = sorted(set(PRIORITIES.values()))


def task_queues() -> tuple[Queue, ...]:
    # x-max-priority only matters on AMQP brokers; Redis uses priority_steps.
    return tuple(
        Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-max-priority": 10})
        for name in QUEUES
    )


def priority_value(priority: str | int | None, default: str) -> int:
    """Turn ``critical|high|normal|low`` (or a raw 0-9) into a Redis priority."""
    if priority is None:
        return PRIORITIES[default]
    if isinstance(priority, bool):
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 9:
            raise ValueError(f"numeric priority must be 0..9 (0 first), got {priority}")
        return priority
    try:
        return PRIORITIES[str(priority).lower()]
    except KeyError:
        raise ValueError(
            f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}") from None
