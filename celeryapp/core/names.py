"""Names and defaults every part shares: tasks, queues, message headers, Redis keys.

Standard library only: the ``turbo`` shell path imports this without paying
for Celery, redis-py or pydantic.
"""
from __future__ import annotations

PRIORITIES: dict[str, int] = {"critical": 0, "high": 3, "normal": 6, "low": 9}
"""Named priority levels mapped to Redis priority steps (0 is served first)."""
PRIORITY_STEPS = sorted(set(PRIORITIES.values()))
DEFAULT_PRIORITY = "normal"

QUERY_QUEUE = "queries"  # local engines (DuckDB): CPU-bound, the prefork worker
AGENT_QUEUE = "agents"
DEFAULT_QUEUE = "default"  # notices, workflow start, other tasks
WAREHOUSE_QUEUE = "warehouse"  # remote engines (Databricks): they wait on I/O
QUEUES = (QUERY_QUEUE, AGENT_QUEUE, DEFAULT_QUEUE, WAREHOUSE_QUEUE)
QUEUE_SEP = ":"  # kombu's priority queue names: "queries", "queries:3", ...
HOST_QUEUE_PREFIX = "host."  # not ":", kombu's priority separator

# Two workers per host: "cpu" (prefork, local DuckDB) and "io" (threads pool: agent
# runs, remote-engine queries, notices, workflow bookkeeping).
CPU_ROLE = "cpu"
IO_ROLE = "io"
ROLES = (CPU_ROLE, IO_ROLE)
ROLE_NODE = {CPU_ROLE: "worker", IO_ROLE: "io"}  # node name: worker@alpha, io@alpha
ROLE_QUEUES = {CPU_ROLE: (QUERY_QUEUE,), IO_ROLE: (AGENT_QUEUE, DEFAULT_QUEUE, WAREHOUSE_QUEUE)}
IO_HOST_QUEUE_SUFFIX = ".io"  # host.alpha.io: work pinned to io@alpha
REMOTE_ENGINES = frozenset({"databricks"})  # queries that wait on a warehouse, not on a CPU
ENGINES = ("databricks", "duckdb")  # tasks/engines registers these
DEFAULT_MAX_SQL_BYTES = 1024 * 1024
# how often a message went back to its queue because its worker process died with it
REQUEUES_HEADER = "turbo_requeues"
DEFAULT_WORKER_LOST_REQUEUES = 2  # the third death of a process running it: FAILURE
DEFAULT_MAX_ARGS_BYTES = 8 * 1024 * 1024  # a task's arguments, JSON-encoded

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
HEALTH_REPLY_KEY = "turbo:health:{id}"  # a liveness ping's answer
META_KEY = "celery-task-meta-{id}"  # Celery's result key (the lean shell reads it)

# custom message headers
FLOW_HEADER = "turbo_flow"  # the workflow a step belongs to
STEP_HEADER = "turbo_step"  # the step's name in it
NOTIFY_HEADER = "turbo_notify"  # a completion notice spec for a plain task


def host_queue(host: str, role: str = CPU_ROLE) -> str:
    """The queue only one worker of ``host`` consumes: ``host.alpha`` (``worker@alpha``,
    the prefork worker) or, for the io role, ``host.alpha.io`` (``io@alpha``)."""
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}; use one of {', '.join(ROLES)}")
    return f"{HOST_QUEUE_PREFIX}{host}{IO_HOST_QUEUE_SUFFIX if role == IO_ROLE else ''}"


def worker_node(host: str, role: str = CPU_ROLE) -> str:
    """The node name of ``host``'s worker in ``role``: ``worker@alpha``, ``io@alpha``."""
    return f"{ROLE_NODE[role]}@{host}"


def node_role(node: str) -> tuple[str, str]:
    """``worker@alpha`` -> (``cpu``, ``alpha``); ``io@alpha`` -> (``io``, ``alpha``);
    a bare ``alpha`` is the cpu worker of alpha."""
    prefix, at, host = node.partition("@")
    if not at:
        return CPU_ROLE, node
    role = next((r for r, name in ROLE_NODE.items() if name == prefix), CPU_ROLE)
    return role, host


def header(request, name: str):
    """A custom message header from a task's request (Context or worker Request)."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    if value is None and hasattr(request, "request_dict"):
        value = request.request_dict.get(name)
    return value



# --- workflows at any size (celeryapp/flows/layout.py): per-workflow hashes and sets in the
# result backend's Redis, all expiring with the results
FLOW_KEYS_PREFIX = "turbo:flow:{id}:"  # + meta, spec, children, state, info, result, pending,
                                       # inflight, failed (celeryapp/flows/layout.py)
FLOWS_RUNNING_KEY = "turbo:flows:running"  # sorted set: running workflow ids by creation time
FLOWS_REPAIR_LOCK = "turbo:flows:repair"  # one repair pass at a time, across workers
EXPAND_HEADER = "turbo_flow_expands"  # a step whose success may add steps (expand/on_complete)
