"""Bad input is refused at the door by both clients (``delay()`` and ``turbo``), with the
limit or the choices named and nothing sent; what is accepted is stored in bounded form."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.helpers import unique_queue
from tasks.agent import run_agent
from tasks.errors import InvalidRequest
from tasks.query import run_query

TURBO = [sys.executable, "-m", "celeryapp.shell.cli"]
WAIT = 60


def turbo(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TURBO, *args], input=input, capture_output=True, text=True,
                          timeout=WAIT, env=os.environ)


@pytest.mark.parametrize("call, needle", [
    (lambda q: run_query.apply_async(("SELECT 1",), {"timeout": float("nan")}, queue=q),
     "timeout must be a positive number of seconds, got nan"),
    (lambda q: run_query.apply_async(("SELECT 1",), {"engine": "postgres"}, queue=q),
     "unknown engine 'postgres'; known engines: databricks, duckdb"),
    (lambda q: run_query.apply_async(("SELECT '" + "x" * (2 << 20) + "'",), queue=q),
     "the limit is 1,048,576 bytes (TURBO_MAX_SQL_BYTES)"),
    (lambda q: run_query.apply_async(("SELECT ?",), {"params": ["y" * (9 << 20)]}, queue=q),
     "the limit is 8,388,608 bytes (TURBO_MAX_ARGS_BYTES)"),
    (lambda q: run_query.apply_async(("SELECT ?",), {"params": [float("inf")]}, queue=q),
     "must be finite numbers"),
    (lambda q: run_agent.apply_async(("p" * (2 << 20),), queue=q),
     "the limit is 1048576 bytes (TURBO_AGENT_MAX_PROMPT_BYTES)"),
    (lambda q: run_agent.apply_async(("hi",), {"profile": "nope"}, queue=q),
     "unknown agent profile 'nope'"),
])
def test_delay_refuses_before_anything_is_sent(broker_client, call, needle):
    queue = unique_queue()
    with pytest.raises(InvalidRequest) as caught:
        call(queue)
    assert needle in str(caught.value)
    assert broker_client.llen(queue) == 0


@pytest.mark.parametrize("argv, stdin, needle", [
    (["query", "SELECT 1", "--engine", "postgres"], None, "unknown engine 'postgres'"),
    (["query", "SELECT 1", "--timeout", "nan"], None, "--timeout must be a positive number"),
    (["query", "-"], "SELECT '" + "x" * (2 << 20) + "'", "(TURBO_MAX_SQL_BYTES)"),
    (["query", "SELECT ?", "--params", "[NaN]"], None, "must be finite numbers"),
    (["agent", "hi", "--profile", "nope"], None, "unknown agent profile 'nope'"),
])
def test_turbo_refuses_before_anything_is_sent(broker_client, argv, stdin, needle):
    queue = unique_queue()
    proc = turbo("submit", *argv, "--queue", queue, input=stdin)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert proc.stdout == "" and broker_client.llen(queue) == 0


def test_a_large_accepted_statement_is_stored_in_bounded_form(shared_worker, celery_app):
    sql = "SELECT 42 AS n -- " + "padding " * 100_000  # 800 kB: under the limit
    result = run_query.delay(sql)
    assert result.get(timeout=WAIT)["rows"] == [[42]]
    client = celery_app.backend.client
    stored = client.get(celery_app.backend.get_key_for_task(result.id))
    assert len(stored) < 5000, len(stored)  # not the 800 kB statement again
    meta = json.loads(stored)
    assert meta["args"][0].startswith("SELECT 42 AS n") and "chars in all]" in meta["args"][0]
    proc = turbo("result", result.id, "--wait", "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["rows"] == [[42]], proc.stderr
