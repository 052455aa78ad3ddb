"""Celery's own canvas (chain, group, chord) of ``turbo.query``/``turbo.agent`` signatures
on this app: real Redis, real workers, the app's own routing, backend and transport.

Bodies that must receive results use ``celery.accumulate``, a task every Celery worker
registers (it returns the arguments it was given): the body sees exactly what the
canvas hands it, nothing of this project's in between.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError, TaskRevokedError

from support.helpers import unique_queue, wait_for
from tasks.agent import run_agent
from tasks.errors import InvalidRequest, QueryError
from tasks.query import run_query

WAIT = 60


def accumulate(celery_app, *args, **options):
    """A body that exists on every worker: ``celery.accumulate`` returns the list of the
    positional arguments it received: what the canvas passed first (a chord's list of
    header results, a chain's previous result), then the signature's own ``args``."""
    return celery_app.signature("celery.accumulate", args=args, **options)


def events(log: Path) -> list[dict]:
    """The fake claude's start/end lines ([fake:log=PATH])."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# --- chord: the body gets the header's results ---------------------------------------------
def test_chord_body_receives_every_query_result_in_header_order(celery_app, shared_worker):
    header = [run_query.s(f"SELECT {i} AS n, count(*) AS orders FROM orders WHERE id % 5 = {i}")
              for i in range(5)]
    result = chord(header)(accumulate(celery_app))
    (collected,) = result.get(timeout=WAIT)
    assert [r["rows"] for r in collected] == [[[i, 1000]] for i in range(5)]
    assert all(r["engine"] == "duckdb" and r["attempts"] == 1 for r in collected)
    header_ids = [r.id for r in result.parent.results]
    assert [r["task_id"] for r in collected] == header_ids  # each header's own result
    assert result.parent.get(timeout=WAIT) == collected


def test_chain_passes_each_query_result_to_the_next_step(celery_app, shared_worker):
    steps = chain(run_query.s("SELECT 40 + 2 AS answer"),
                  accumulate(celery_app, "and a partial argument"))
    result = steps.apply_async()
    first, partial = result.get(timeout=WAIT)
    assert first["rows"] == [[42]] and first["columns"] == ["answer"]
    assert partial == "and a partial argument"
    assert first["task_id"] == result.parent.id
    assert result.parent.get(timeout=WAIT) == first


def test_a_query_signature_after_a_step_is_refused_not_fed_a_dict(shared_worker, broker_client):
    """``run_query.s()`` / ``run_agent.s()`` after another step would get its result (a
    dict) as SQL or prompt: refused at submit, before anything is sent, naming ``.si()``;
    the immutable form runs."""
    queue = unique_queue()
    for fed in (chain(run_query.s("SELECT 1", queue=queue), run_query.s()),
                chain(run_query.s("SELECT 1", queue=queue), run_agent.s("hi")),
                chord([run_query.s("SELECT 1", queue=queue)], run_query.s("SELECT 2")),
                run_query.s("SELECT 1", queue=queue).set(link=run_agent.s())):
        with pytest.raises(InvalidRequest, match=r"use \.si\(\.\.\.\)"):
            fed.apply_async()
    assert not [key for key in broker_client.keys(f"{queue}*")], "something was sent"
    result = chain(run_query.s("SELECT 1"), run_query.si("SELECT 2")).apply_async()
    assert result.get(timeout=WAIT)["rows"] == [[2]]


def test_group_piped_into_a_body_becomes_a_chord_of_agent_runs(celery_app, shared_worker):
    """``group | body`` is a chord: the agent answers reach the body together."""
    prompts = [f"agent {i}" for i in range(3)]
    result = (group(run_agent.s(p, model="fake-sonnet") for p in prompts)
              | accumulate(celery_app)).apply_async()
    (answers,) = result.get(timeout=WAIT)
    assert [a["result"] for a in answers] == [f"fake claude (fake-sonnet): {p}" for p in prompts]
    assert all(a["is_error"] is False for a in answers)


# --- group: agent runs side by side --------------------------------------------------------
def test_group_of_agent_runs_runs_them_side_by_side(start_worker, tmp_path):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=4, env={"TURBO_AGENT_CONCURRENCY": "4"})
    log = tmp_path / "runs.log"
    started = time.monotonic()
    result = group(run_agent.s(f"run {i} [fake:sleep=3] [fake:log={log}]", queue=queue)
                   for i in range(4)).apply_async()
    answers = result.get(timeout=WAIT)
    wall = time.monotonic() - started
    assert [a["result"].split(" [fake")[0][-5:] for a in answers] == [f"run {i}" for i in
                                                                         range(4)]
    assert len({a["pid"] for a in answers}) == 4
    seen = events(log)
    starts = [e["t"] for e in seen if e["event"] == "start"]
    ends = [e["t"] for e in seen if e["event"] == "end"]
    assert len(starts) == len(ends) == 4
    # all four were running at once: every run started before the first one ended
    assert max(starts) < min(ends), seen
    assert wall < 4 * 3, f"4 x 3 s on 4 slots took {wall:.1f}s (one after the other: 12 s)"


# --- a failing header fails the chord ---------------------------------------------------------
def test_a_failing_query_in_the_header_fails_the_chord_with_its_error(celery_app,
                                                                      shared_worker):
    header = [run_query.s("SELECT 1 AS ok"), run_query.s("SELEC broken"),
              run_query.s("SELECT 3 AS ok")]
    result = chord(header)(accumulate(celery_app))
    bad = result.parent.results[1]
    # waiting on the chord raises the header's own error (Celery checks the parents first)
    with pytest.raises(QueryError, match="syntax error"):
        result.get(timeout=WAIT)
    # the chord's own result: a ChordError naming the member and its error
    failure = result.get(timeout=WAIT, propagate=False)
    assert isinstance(failure, ChordError), repr(failure)
    assert result.state == "FAILURE"
    message = str(failure)
    assert bad.id in message and "QueryError" in message and "syntax error" in message
    # the failing member keeps its own error; the others succeeded
    with pytest.raises(QueryError, match="syntax error"):
        bad.get(timeout=WAIT)
    assert [r.get(timeout=WAIT)["rows"] for r in result.parent.results[::2]] == [[[1]], [[3]]]


# --- revoke ------------------------------------------------------------------------------------
def test_revoking_a_group_stops_the_running_member_and_the_queued_ones_never_run(
        start_worker, tmp_path):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=1)
    log = tmp_path / "runs.log"
    result = group(run_agent.s(f"member {i} [fake:sleep=60] [fake:log={log}]", queue=queue)
                   for i in range(4)).apply_async()
    wait_for(lambda: events(log), 30, "the first member started")
    result.revoke(terminate=True, signal="SIGUSR1")
    for member in result.results:
        with pytest.raises(TaskRevokedError):
            member.get(timeout=WAIT)
        assert member.state == "REVOKED"
    # one slot, FIFO: this query runs only after the worker took (and discarded) the
    # queued members, and only because the running one really stopped
    assert run_query.delay("SELECT 7", queue=queue).get(timeout=WAIT)["rows"] == [[7]]
    assert [e["event"] for e in events(log)] == ["start"]  # one started, killed; none ran
    assert [m.state for m in result.results] == ["REVOKED"] * 4


def test_revoking_a_chord_stops_its_header_and_the_body_never_runs(start_worker, tmp_path):
    queue = unique_queue()
    start_worker(queues=queue, concurrency=1)
    log, body_log = tmp_path / "header.log", tmp_path / "body.log"
    header = [run_agent.s(f"header {i} [fake:sleep=60] [fake:log={log}]", queue=queue)
              for i in range(3)]
    body = run_agent.si(f"body [fake:log={body_log}]", queue=queue)
    result = chord(header)(body)
    wait_for(lambda: events(log), 30, "the first header member started")
    result.parent.revoke(terminate=True, signal="SIGUSR1")  # the header...
    result.revoke()  # ...and the body
    running = result.parent.results[0]
    for member in result.parent.results:
        with pytest.raises(TaskRevokedError):
            member.get(timeout=WAIT)
    assert run_query.delay("SELECT 8", queue=queue).get(timeout=WAIT)["rows"] == [[8]]
    assert [e["event"] for e in events(log)] == ["start"]
    assert [m.state for m in result.parent.results] == ["REVOKED"] * 3
    assert events(body_log) == []  # the body never ran
    # Celery's semantics: a revoked header member fails the chord, naming it
    failure = result.get(timeout=WAIT, propagate=False)
    assert isinstance(failure, ChordError), repr(failure)
    assert running.id in str(failure) and "TaskRevokedError" in str(failure)
