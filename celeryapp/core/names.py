"""Names and defaults every part shares: tasks, queues, message headers, Redis keys.

Standard library only: the ``turbo`` shell path imports this without paying
for Celery, redis-py or pydantic.
"""
from __future__ import annotations

PRIORITIES: dict[str, int] = {"critical": 0, "high": 3, "normal": 6, "low": 9}
"""Named priority levels mapped to Redis priority steps (0 is served first)."""
PRIORITY_STEPS = sorted(set(PRIORITIES.values()))
DEFAULT_PRIORITY = "normal"

QUERY_QUEUE = "queries"
AGENT_QUEUE = "agents"
DEFAULT_QUEUE = "default"
QUEUES = (QUERY_QUEUE, AGENT_QUEUE, DEFAULT_QUEUE)
QUEUE_SEP = ":"  # kombu's priority queue names: "queries", "queries:3", ...
HOST_QUEUE_PREFIX = "host."  # not ":", kombu's priority separator

QUERY_TASK = "turbo.query"
AGENT_TASK = "turbo.agent"
NOTIFY_TASK = "turbo.notify"
FLOW_START_TASK = "turbo.flow.start"
PING_TASK = "turbo.health.ping"
TASK_ROUTES = {QUERY_TASK: {"queue": QUERY_QUEUE}, AGENT_TASK: {"queue": AGENT_QUEUE}}

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DEFAULT_QUERY_TIMEOUT = 300.0
DEFAULT_QUERY_MAX_TIMEOUT = 3600.0
DEFAULT_AGENT_TIMEOUT = 1800.0
DEFAULT_AGENT_MAX_TIMEOUT = 3600.0
DEFAULT_TIME_LIMIT_GRACE = 30.0
DEFAULT_RESULT_EXPIRES = 7 * 24 * 3600

RECENT_KEY = "turbo:recent"  # sorted set of "task:<id>" / "flow:<id>" by submit time
RECENT_KEEP = 1000  # newest members kept in it
FLOW_KEY = "turbo:flow:{id}"  # JSON document of one workflow's state
HEALTH_REPLY_KEY = "turbo:health:{id}"  # a liveness ping's answer
META_KEY = "celery-task-meta-{id}"  # Celery's result key (the lean shell reads it)

# custom message headers
FLOW_HEADER = "turbo_flow"  # the workflow a step belongs to
STEP_HEADER = "turbo_step"  # the step's name in it
NOTIFY_HEADER = "turbo_notify"  # a completion notice spec for a plain task


def host_queue(host: str) -> str:
    """The queue only ``worker@<host>`` consumes (agent runs pinned to a host)."""
    return f"{HOST_QUEUE_PREFIX}{host}"


def header(request, name: str):
    """A custom message header from a task's request (Context or worker Request)."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    if value is None and hasattr(request, "request_dict"):
        value = request.request_dict.get(name)
    return value


