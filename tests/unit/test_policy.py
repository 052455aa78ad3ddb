"""celeryapp.core.policy: the one request policy behind delay(), workflows and turbo."""
from __future__ import annotations

import pytest

from celeryapp.core.errors import InvalidRequest
from celeryapp.core.names import NOTIFY_HEADER, PRIORITIES
from celeryapp.core.policy import Limits, call_options, check_timeout, time_limits

LIMITS = Limits(300, 3600, 30, "TURBO_QUERY_MAX_TIMEOUT", "normal")


def test_routing_kwargs_become_options_and_timeout_becomes_limits():
    kwargs, options = call_options({"params": [1], "priority": "high", "host": "alpha",
                                    "timeout": 10}, {}, LIMITS)
    assert kwargs == {"params": [1], "timeout": 10}
    assert options["queue"] == "host.alpha"
    assert options["priority"] == PRIORITIES["high"]
    assert (options["soft_time_limit"], options["time_limit"]) == (40, 70)


def test_defaults_apply_without_options():
    kwargs, options = call_options(None, {}, LIMITS)
    assert kwargs == {}
    assert options["priority"] == PRIORITIES["normal"]
    assert (options["soft_time_limit"], options["time_limit"]) == time_limits(300, 30)


def test_notify_moves_to_a_header():
    kwargs, options = call_options({"notify": {"dir": "/tmp/n"}}, {"headers": {"a": 1}}, LIMITS)
    assert "notify" not in kwargs
    assert options["headers"] == {"a": 1, NOTIFY_HEADER: {"dir": "/tmp/n"}}


@pytest.mark.parametrize("kwargs, options, message", [
    ({"host": "alpha"}, {"queue": "q"}, "queue or host, not both"),
    ({}, {"queue": "a:b"}, "queue name must be non-empty"),
    ({"priority": "urgent"}, {}, "unknown priority 'urgent'"),
    ({"timeout": 0}, {}, "timeout must be a positive number"),
    ({"timeout": True}, {}, "timeout must be a positive number"),
    ({"timeout": 4000}, {}, r"timeout 4000s exceeds the maximum of 3600s "
                            r"\(TURBO_QUERY_MAX_TIMEOUT\)"),
    ({"notify": {"webhook": "ftp://x"}}, {}, "notify.webhook must be an http"),
    ({"notify": {"mail": "x"}}, {}, "notify must be a mapping"),
])
def test_bad_requests_are_named(kwargs, options, message):
    with pytest.raises(InvalidRequest, match=message):
        call_options(kwargs, options, LIMITS)


def test_the_shell_wording_of_the_same_check():
    with pytest.raises(ValueError, match=r"^--timeout 4000s exceeds the maximum of 3600s for a "
                                         r"query \(TURBO_QUERY_MAX_TIMEOUT\)$"):
        check_timeout(4000, LIMITS, label="--timeout", where=" for a query")


# --- routing: which worker of a host runs what ---------------------------------------------
@pytest.mark.parametrize("task, args, kwargs, options, queue", [
    ("turbo.query", (), {}, {}, "queries"),                            # DuckDB: prefork
    ("turbo.query", (), {"engine": "duckdb"}, {}, "queries"),
    ("turbo.query", (), {"engine": "databricks"}, {}, "warehouse"),    # remote: io worker
    ("turbo.query", ("SELECT 1", None, "databricks"), {}, {}, "warehouse"),  # positional
    ("turbo.agent", (), {}, {}, "agents"),
    ("turbo.query", (), {"host": "alpha"}, {}, "host.alpha"),          # worker@alpha
    ("turbo.query", (), {"host": "alpha", "engine": "databricks"}, {}, "host.alpha.io"),
    ("turbo.agent", (), {"host": "alpha"}, {}, "host.alpha.io"),       # io@alpha
    ("turbo.agent", (), {}, {"host": "alpha"}, "host.alpha.io"),       # host= as an option
    ("turbo.notify", (), {}, {"host": "alpha"}, "host.alpha.io"),      # anything else: io
    ("turbo.query", (), {"engine": "databricks"}, {"queue": "mine"}, "mine"),  # explicit wins
    ("turbo.agent", (), {"queue": "mine"}, {}, "mine"),
])
def test_routing_by_kind_engine_and_host(task, args, kwargs, options, queue):
    _, routed = call_options(kwargs, options, LIMITS, task=task, args=args)
    assert routed["queue"] == queue


def test_routing_follows_the_default_engine_and_leaves_other_tasks_to_celery():
    _, routed = call_options({}, {}, LIMITS, task="turbo.query", default_engine="databricks")
    assert routed["queue"] == "warehouse"
    _, routed = call_options({}, {}, LIMITS, task="turbo.notify")
    assert "queue" not in routed  # Celery's default routing: the default queue
    # a retry or slot re-queue keeps the destination of the message it came from
    _, routed = call_options({"engine": "databricks"}, {"exchange": "q-1", "routing_key": "q-1"},
                             LIMITS, task="turbo.query")
    assert "queue" not in routed


def test_host_queue_and_node_names():
    from celeryapp.core.names import host_queue, node_role, worker_node

    assert host_queue("alpha") == "host.alpha" and host_queue("alpha", "io") == "host.alpha.io"
    assert worker_node("alpha") == "worker@alpha" and worker_node("alpha", "io") == "io@alpha"
    assert node_role("io@alpha") == ("io", "alpha")
    assert node_role("worker@alpha") == node_role("alpha") == ("cpu", "alpha")
    with pytest.raises(ValueError, match="unknown worker role"):
        host_queue("alpha", "gpu")


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -float("inf"), 0, -1, "10", True])
def test_timeouts_must_be_finite_positive_numbers(timeout):
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        check_timeout(timeout, LIMITS)


SMALL = Limits(60, 600, 5, "TURBO_QUERY_MAX_TIMEOUT", max_args_bytes=2000, max_sql_bytes=100)


@pytest.mark.parametrize("args, kwargs, message", [
    (("SELECT 1",), {"engine": "postgres"},
     "unknown engine 'postgres'; known engines: databricks, duckdb"),
    (("SELECT 1", None, "oracle"), {}, "unknown engine 'oracle'"),
    (("SELECT '" + "x" * 200 + "'",), {}, "SQL is 209 bytes; the limit is 100 bytes "
                                         "(TURBO_MAX_SQL_BYTES)"),
    (("",), {}, "SQL must be a non-empty string"),
    ((None,), {}, "SQL must be a non-empty string, got NoneType"),
    (("SELECT ?",), {"params": ["y" * 3000]}, "the limit is 2,000 bytes (TURBO_MAX_ARGS_BYTES)"),
    (("SELECT ?",), {"params": [float("nan")]}, "must be finite numbers and JSON values"),
    (("SELECT ?",), {"params": [object()]}, "argument of type object cannot travel as JSON"),
])
def test_queries_are_refused_at_the_door(args, kwargs, message):
    from celeryapp.core.names import QUERY_TASK

    with pytest.raises(InvalidRequest) as caught:
        call_options(kwargs, {}, SMALL, task=QUERY_TASK, args=args)
    assert message in str(caught.value)


def test_every_task_has_its_arguments_bounded():
    with pytest.raises(InvalidRequest, match="TURBO_MAX_ARGS_BYTES"):
        call_options({"blob": "z" * 5000}, {}, SMALL, task="some.task", args=())
    call_options({"blob": "z" * 100}, {}, SMALL, task="some.task", args=())


def test_stored_arguments_are_bounded_copies():
    from celeryapp.overrides.stored import clip

    stored = clip(["SELECT '" + "x" * 5_000_000 + "'", {"params": list(range(10_000))}])
    assert len(stored[0]) < 1100 and stored[0].endswith("[5,000,009 chars in all]")
    assert len(stored[1]["params"]) == 51 and stored[1]["params"][-1] == "... [10,000 items in all]"
