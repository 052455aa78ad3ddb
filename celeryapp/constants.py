"""Names and defaults shared by the Celery side and the lean shell client.

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


def check_queue_name(name: str) -> str:
    """Refuse queue names kombu's Redis transport would misread (":" is its priority
    separator here: "a:b" at priority 0 would be read back as queue "a")."""
    if not isinstance(name, str) or not name or QUEUE_SEP in name or any(c.isspace() for c in name):
        raise ValueError(f"queue name must be non-empty, without {QUEUE_SEP!r} or spaces, "
                         f"got {name!r}")
    return name


def host_queue(host: str) -> str:
    """The queue only ``worker@<host>`` consumes (agent runs pinned to a host)."""
    return f"{HOST_QUEUE_PREFIX}{host}"


def priority_value(priority: str | int | None, default: str = DEFAULT_PRIORITY) -> int:
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


def time_limits(timeout: float, grace: float) -> tuple[float, float]:
    """(soft, hard) Celery limits behind a runner deadline of ``timeout`` seconds."""
    soft = timeout + grace
    return soft, soft + grace
