"""Queues, routes and priority levels as Celery/kombu objects.

Each workload has its own queue (the strong tool for ordering on Redis);
within a queue four named priorities map onto Redis priority steps.
"""
from __future__ import annotations

from kombu import Exchange, Queue

from .constants import (AGENT_QUEUE, DEFAULT_QUEUE, PRIORITY_STEPS, QUERY_QUEUE, QUEUES,
                        TASK_ROUTES, host_queue, priority_value)


def task_queues() -> tuple[Queue, ...]:
    # x-max-priority only matters on AMQP brokers; Redis uses priority_steps.
    return tuple(
        Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-max-priority": 10})
        for name in QUEUES
    )


__all__ = ["AGENT_QUEUE", "DEFAULT_QUEUE", "PRIORITY_STEPS", "QUERY_QUEUE", "QUEUES",
           "TASK_ROUTES", "host_queue", "priority_value", "task_queues"]
