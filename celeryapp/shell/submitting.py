"""``turbo submit query|agent|flow``: Celery messages written straight to Redis."""
from __future__ import annotations

import os
import re
import sys
import time

from ..core import names as C
from ..core.agent_options import DEFAULT_PROFILE, check_request
from ..core.errors import InvalidRequest
from ..core.policy import (
    check_args_size,
    check_query,
    check_timeout,
    priority_value,
    route,
    time_limits,
)
from . import resp
from .common import (
    EXIT_OK,
    FLOW_START_TASK,
    Failed,
    UsageError,
    backend,
    broker,
    env,
    result_expires,
    sent_event,
    timeout_policy,
)
from .messages import task_message


def checked_timeout(timeout, kind: str) -> tuple[float, float]:
    """(soft, hard) Celery limits for a ``kind`` task, by the policy TurboTask applies."""
    policy = timeout_policy(kind)
    try:
        seconds = check_timeout(timeout, policy, label="--timeout", where=f" for a {kind}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return time_limits(seconds, policy.grace)


def _priority(text: str | None) -> int:
    default = env("TURBO_DEFAULT_PRIORITY", C.DEFAULT_PRIORITY)
    try:
        if text is not None and text.isdigit():
            return priority_value(int(text))
        return priority_value(text, default)
    except (ValueError, KeyError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None


def _read_text(value: str, what: str) -> str:
    if value == "-":
        value = sys.stdin.read()
    if not value.strip():
        raise UsageError(f"the {what} is empty")
    return value


def publish(name: str, args: list, kwargs: dict, *, queue: str, priority: int,
            limits: tuple[float, float] | None, recent: str = "task") -> str:
    soft, hard = limits if limits else (None, None)
    message = task_message(name, args, kwargs, queue=queue, priority=priority,
                           time_limit=hard, soft_time_limit=soft)
    b, r = broker(), backend()
    resp.run_batches([(b, message.commands(b.db, sent_event=sent_event())),
                      (r, remember(f"{recent}:{message.id}"))])
    return message.id


def remember(member: str, when: float | None = None) -> list[tuple]:
    """Commands that add ``member`` to the recent list and keep it bounded."""
    now = time.time()
    return [("ZADD", C.RECENT_KEY, repr(float(when or now)), member),
            ("ZREMRANGEBYRANK", C.RECENT_KEY, 0, -(C.RECENT_KEEP + 1)),
            ("ZREMRANGEBYSCORE", C.RECENT_KEY, "-inf", repr(now - result_expires()))]


def cmd_submit_query(a) -> int:
    sql = _read_text(a.sql, "SQL")
    kwargs: dict = {}
    if a.params is not None:
        import json

        try:
            params = json.loads(a.params)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON ({exc}): {a.params!r}") from None
        if not isinstance(params, (list, dict)):
            raise UsageError(f"--params must be a JSON list or object, got {a.params!r}")
        kwargs["params"] = params
    if a.engine:
        kwargs["engine"] = a.engine
    kwargs.update(_run_options(a))
    if a.max_inline_rows is not None:
        kwargs["max_inline_rows"] = _non_negative(a.max_inline_rows, "--max-inline-rows")
    limits = checked_timeout(a.timeout, "query")
    _check_size("query", [sql], kwargs, query=True)
    engine = a.engine or env("TURBO_DEFAULT_ENGINE", "duckdb")
    task_id = publish(C.QUERY_TASK, [sql], kwargs,
                      queue=_queue(a, C.QUERY_TASK, engine),
                      priority=_priority(a.priority), limits=limits)
    print(task_id)
    return EXIT_OK


def cmd_submit_agent(a) -> int:
    prompt = _read_text(a.prompt, "prompt")
    profile = a.profile or DEFAULT_PROFILE
    kwargs: dict = {"profile": profile} if a.profile else {}
    if a.cwd:
        kwargs["cwd"] = os.path.abspath(a.cwd)
    options = {"model": a.model, "max_turns": a.max_turns,
               "allowed_tools": None if a.allowed_tools is None else
               [tool.strip() for tool in a.allowed_tools.split(",") if tool.strip()],
               "permission_mode": a.permission_mode,
               "append_system_prompt": a.append_system_prompt, "resume": a.resume,
               "keep_session": True if a.keep_session else None,
               "keep_workdir": True if a.keep_workdir else None}
    try:  # the same checks as delay(): refused here, before anything is sent
        kwargs.update(check_request(prompt, profile, options,
                                    int(env("TURBO_AGENT_MAX_PROMPT_BYTES", 1024 * 1024))))
    except InvalidRequest as exc:
        raise UsageError(_flag_names(str(exc))) from None
    kwargs.update(_run_options(a))
    queue = _queue(a, C.AGENT_TASK)
    limits = checked_timeout(a.timeout, "agent")
    _check_size("agent", [prompt], kwargs)
    task_id = publish(C.AGENT_TASK, [prompt], kwargs, queue=queue,
                      priority=_priority(a.priority), limits=limits)
    print(task_id)
    return EXIT_OK


def _check_size(kind: str, args: list, kwargs: dict, query: bool = False) -> None:
    """What delay() refuses, refused here too: SQL over TURBO_MAX_SQL_BYTES, an unknown
    engine, arguments over TURBO_MAX_ARGS_BYTES."""
    policy = timeout_policy(kind)
    try:
        if query:
            check_query(args, kwargs, policy)
        check_args_size(args, kwargs, policy.max_args_bytes)
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None


def _flag_names(text: str) -> str:
    """"option 'max_turns'" -> "--max-turns": the error in the words of the command line."""
    return re.sub(r"option '([a-z_]+)'", lambda m: "--" + m.group(1).replace("_", "-"), text)


def cmd_submit_flow(a) -> int:
    try:
        from celeryapp.flows import FlowSpecError, creation_command, prepare
    except ImportError as exc:
        raise Failed(f"workflows are not available in this installation "
                     f"(cannot import celeryapp.flows: {exc})") from None
    spec = a.file
    if spec == "-":
        spec = sys.stdin.read()
        if not spec.strip():
            raise UsageError("the workflow on stdin is empty")
        spec += "\n"  # text, not a path, for celeryapp.flows.spec.load
    elif not os.path.isfile(spec):
        raise UsageError(f"workflow file not found: {spec}")
    notify = None
    if a.notify:
        target = "webhook" if a.notify.startswith(("http://", "https://")) else "dir"
        notify = {target: a.notify}
    try:
        flow_id, state = prepare(spec, notify=notify)
    except FlowSpecError as exc:
        raise UsageError(str(exc)) from None
    r = backend()
    # the workers' own creation command (flows.lua's create): the workflow's hashes, in
    # one EVAL
    commands = [creation_command(flow_id, state, result_expires()),
                *remember(f"flow:{flow_id}", state.get("created"))]
    stored = resp.run_batches([(r, commands)])[0][0]
    if not stored:
        raise Failed(f"workflow {flow_id} exists already")
    message = task_message(FLOW_START_TASK, [flow_id], {}, queue=C.DEFAULT_QUEUE,
                           priority=_priority(None))
    b = broker()
    resp.run_batches([(b, message.commands(b.db, sent_event=sent_event()))])
    print(flow_id)
    return EXIT_OK


def _queue(a, task: str, engine: str | None = None) -> str:
    """--queue, or --host's queue for this kind of work, or the kind's own queue:
    the request policy's routing (celeryapp.core.policy.route), as delay() does."""
    if a.queue and a.host:
        raise UsageError("give --queue or --host, not both")
    if a.queue:
        return a.queue
    return route(task, engine, a.host)


def _run_options(a) -> dict:
    """--timeout and --retries, which query and agent runs share."""
    options: dict = {}
    if a.timeout is not None:
        options["timeout"] = a.timeout
    if a.retries is not None:
        options["retries"] = _non_negative(a.retries, "--retries")
    return options


def _non_negative(value: int, option: str) -> int:
    if value < 0:
        raise UsageError(f"{option} must be >= 0, got {value}")
    return value
