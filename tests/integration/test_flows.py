"""Workflows on real workers: DAG order and overlap, skips, expansion, cancellation."""
from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from celeryapp import flows

WAIT = 90


@pytest.fixture
def flow_worker(start_worker):
    """A worker on its own queue with four slots for agent steps."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queues=f"{queue}", concurrency=4,
                          env={"TURBO_AGENT_CONCURRENCY": "4"})
    worker.queue = queue
    return worker


def sleep_step(seconds: float, needs=(), label="") -> dict:
    return {"agent": f"{label} [fake:sleep={seconds}]", "needs": list(needs), "timeout": 60}


def span(state: dict, name: str) -> tuple[float, float]:
    step = state["steps"][name]
    return step["started"], step["ended"]


def test_diamond_runs_in_dependency_order_with_parallel_middle(flow_worker):
    flow_id = flows.submit({"name": "diamond", "defaults": {"queue": flow_worker.queue}, "steps": {
        "a": {"query": "SELECT 21 AS half"},
        "b": sleep_step(1.5, ["a"], "left {{ a.rows[0][0] }}"),
        "c": sleep_step(1.5, ["a"], "right"),
        "d": {"needs": ["b", "c"], "query": "SELECT {{ a.rows[0][0] }} * 2 AS whole"},
    }})
    state = flows.wait(flow_id, WAIT)
    assert state["state"] == "succeeded", json.dumps(state, indent=1)
    a, b, c, d = (span(state, n) for n in "abcd")
    assert a[1] <= b[0] and a[1] <= c[0]
    assert max(b[1], c[1]) <= d[0]
    assert b[0] < c[1] and c[0] < b[1], "b and c should overlap"
    result = flows.get_state(flow_id)["steps"]["d"]
    assert result["worker"] == flow_worker.name and result["attempts"] == 1
    from celery.result import AsyncResult

    assert AsyncResult(result["task_id"]).get(timeout=5)["rows"] == [[42]]
    agent = AsyncResult(state["steps"]["b"]["task_id"]).get(timeout=5)
    assert "left 21" in agent["result"]  # the parent's rows were rendered into the prompt


def test_non_series_parallel_dag_follows_its_critical_path(flow_worker):
    # A->C, A->D, B->D. Stage-by-stage would take 1+2 (A,B) + 2 (C,D) = 4 s;
    # the critical path is 3 s (A 1 s -> C 2 s, and B 2 s -> D 1 s).
    flow_id = flows.submit({"name": "nsp", "defaults": {"queue": flow_worker.queue}, "steps": {
        "A": sleep_step(1), "B": sleep_step(2),
        "C": sleep_step(2, ["A"]), "D": sleep_step(1, ["A", "B"]),
    }})
    state = flows.wait(flow_id, WAIT)
    assert state["state"] == "succeeded"
    A, B, C, D = (span(state, n) for n in "ABCD")
    assert C[0] < B[1], "C waited for B, which it does not need"
    assert D[0] >= max(A[1], B[1])
    makespan = max(C[1], D[1]) - min(A[0], B[0])
    # generous for a loaded 2-core machine; the overlap above is what tells the designs
    # apart (bench/dag.py measures the makespan against the critical path)
    assert makespan < 5.5, f"makespan {makespan:.2f}s vs critical path 3s"


def test_failed_step_skips_descendants_and_independent_branch_finishes(flow_worker):
    flow_id = flows.submit({"name": "skip", "defaults": {"queue": flow_worker.queue}, "steps": {
        "bad": {"query": "SELECT * FROM no_such_table"},
        "child": {"needs": ["bad"], "query": "SELECT 1"},
        "grandchild": {"needs": ["child"], "query": "SELECT 1"},
        "independent": sleep_step(1),
        "after_independent": {"needs": ["independent"], "query": "SELECT 2"},
    }})
    state = flows.wait(flow_id, WAIT)
    steps = state["steps"]
    assert state["state"] == "failed"
    assert steps["bad"]["state"] == "failed" and "no_such_table" in steps["bad"]["error"]
    assert steps["bad"]["attempts"] == 1
    for name in ("child", "grandchild"):
        assert steps[name]["state"] == "skipped"
        assert steps[name]["skipped_because"] == "bad"
    assert steps["independent"]["state"] == "succeeded"
    assert steps["after_independent"]["state"] == "succeeded"
    report = flows.flow_report(state)
    assert report["steps"]["child"]["skipped_because"] == "bad"


def test_on_complete_callback_adds_steps(flow_worker):
    flow_id = flows.submit({"name": "expand", "defaults": {"queue": flow_worker.queue}, "steps": {
        "count_orders": {"query": "SELECT count(*) FROM orders",
                         "on_complete": "tests.support.flow_callbacks:add_report_step"},
    }})
    state = flows.wait(flow_id, WAIT)
    assert state["state"] == "succeeded", json.dumps(state, indent=1)
    assert set(state["steps"]) == {"count_orders", "report", "echo"}
    assert state["steps"]["report"]["added_by"] == "count_orders"
    from celery.result import AsyncResult

    assert AsyncResult(state["steps"]["report"]["task_id"]).get(timeout=5)["rows"] == [[10000]]
    assert state["steps"]["report"]["spec"]["queue"] == flow_worker.queue  # defaults apply


def test_agent_output_adds_steps(flow_worker, tmp_path):
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({"steps": {
        "follow_up": {"needs": ["plan"], "query": "SELECT 'from the agent' AS origin"}}}))
    flow_id = flows.submit({"name": "agent-expand", "defaults": {"queue": flow_worker.queue},
                            "steps": {"plan": {"agent": f"plan [fake:answer-file={answer}]",
                                               "expand": True}}})
    state = flows.wait(flow_id, WAIT)
    assert state["state"] == "succeeded", json.dumps(state, indent=1)
    assert state["steps"]["follow_up"]["state"] == "succeeded"


def test_invalid_added_steps_fail_the_step_with_the_reason(flow_worker):
    flow_id = flows.submit({"name": "bad-expand", "defaults": {"queue": flow_worker.queue},
                            "steps": {"a": {"query": "SELECT 1",
                                            "on_complete": "tests.support.flow_callbacks"
                                                           ":bad_steps"},
                                      "b": {"needs": ["a"], "query": "SELECT 2"}}})
    state = flows.wait(flow_id, WAIT)
    assert state["state"] == "failed"
    assert "needs unknown step 'no_such_step'" in state["steps"]["a"]["error"]
    assert state["steps"]["b"]["state"] == "skipped"


def test_cancel_stops_running_steps_at_the_source(start_worker):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    start_worker(queues=queue, concurrency=1)
    endless = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"
    flow_id = flows.submit({"name": "cancel", "defaults": {"queue": queue}, "steps": {
        "long": {"query": endless, "timeout": 600},
        "next": {"needs": ["long"], "query": "SELECT 1"},
    }})
    deadline = time.monotonic() + WAIT
    while flows.get_state(flow_id)["steps"]["long"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    flows.cancel(flow_id)
    state = flows.get_state(flow_id)
    assert state["state"] == "cancelled"
    assert {s["state"] for s in state["steps"].values()} == {"cancelled"}
    # the single slot is free again only if the statement was really cancelled
    from tasks.query import run_query

    assert run_query.delay("SELECT 5", queue=queue).get(timeout=30)["rows"] == [[5]]


# --- any size: flat cost per step (issue 15) ----------------------------------------------
IDLE = {"brpop", "bzpopmin", "bzmpop", "ping", "info", "client", "select", "hello", "auth",
        "subscribe", "psubscribe", "unsubscribe", "config", "command"}


def _redis_totals(client) -> tuple[int, int]:
    """(commands run, bytes in and out) on the test Redis so far, idle polling left out."""
    stats = client.info("commandstats")
    calls = sum(v["calls"] for k, v in stats.items() if k.split("_", 1)[1] not in IDLE)
    net = client.info("stats")
    return calls, net["total_net_input_bytes"] + net["total_net_output_bytes"]


def _fan(size: int, queue: str) -> dict:
    steps = {"root": {"query": "SELECT 1 AS one"}}
    steps.update({f"m{i}": {"needs": "root", "query": f"SELECT {i}"} for i in range(size)})
    steps["sink"] = {"needs": [f"m{i}" for i in range(size)],
                     "query": "SELECT {{ root.rows[0][0] }} + 1 AS two"}
    return {"name": f"fan-{size}", "defaults": {"queue": queue}, "steps": steps}


def test_fan_out_fan_in_costs_the_same_per_step_at_any_size(start_worker, celery_app):
    """A 400-wide fan-out/fan-in finishes; the Redis commands and bytes per step of a
    400-step workflow are those of a 50-step one (the old engine rewrote the whole
    workflow document on every event: its bytes per step grew with the size)."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    start_worker(queues=queue, concurrency=2)
    client = celery_app.backend.client
    per_step = {}
    for size in (50, 400):
        calls, moved = _redis_totals(client)
        flow_id = flows.submit(_fan(size, queue))
        state = flows.wait(flow_id, WAIT, interval=0.25)
        assert state["state"] == "succeeded", flows.flow_report(state)
        assert len(state["steps"]) == size + 2
        after_calls, after_moved = _redis_totals(client)
        per_step[size] = ((after_calls - calls) / (size + 2), (after_moved - moved) / (size + 2))
    from celery.result import AsyncResult

    assert AsyncResult(state["steps"]["sink"]["task_id"]).get(timeout=5)["rows"] == [[2]]
    small, big = per_step[50], per_step[400]
    assert big[0] <= small[0] * 1.25, per_step  # commands per step
    assert big[1] <= small[1] * 1.25, per_step  # bytes per step


def test_get_state_and_summary_of_a_big_workflow_read_alike_in_the_shell(celery_app):
    """get_state reads 10,000 steps in one pipeline; the turbo shell's own reader (raw RESP,
    core only) reads the same layout the same way; its status summary stays short."""
    from celeryapp.flows import api, runtime
    from celeryapp.shell import entries, resp

    size = 10_000
    spec = {"name": "big", "steps": {f"s{i}": {"query": "SELECT 1"} for i in range(size)}}
    flow_id, state = api.prepare(spec)
    store = runtime.store()
    store.create(flow_id, state)
    claimed = list(store.start(flow_id, time.time()).claimed)
    assert len(claimed) == size
    for name, task_id in claimed[:3]:
        store.failed(flow_id, name, task_id, time.time(), "boom")
    started = time.perf_counter()
    whole = flows.get_state(flow_id)
    took = time.perf_counter() - started
    assert len(whole["steps"]) == size and took < 1.0, took  # ~0.1 s; generous when loaded
    summary = flows.summary_state(flow_id)
    assert summary["counts"] == {"dispatching": size - 3, "failed": 3}
    assert len(summary["steps"]) == size  # failed + in flight: every step here

    client = resp.connect(os.environ["TURBO_RESULT_BACKEND"], shared=False)  # not cached
    try:
        shell = entries.fetch(client, [entries.Entry(flow_id, "flow")], "all")[0].flow
        brief = entries.fetch(client, [entries.Entry(flow_id, "flow")], "summary")[0].flow
    finally:
        client.connection.close()
    for key in ("id", "name", "state", "created", "ended", "notify", "defaults", "steps"):
        assert shell[key] == whole[key], key
    assert brief["partial"] and brief["counts"] == summary["counts"]
    assert entries.flow_summary_line(brief) == "9,997 dispatching, 3 failed"
    # never published: not left for the workers' repair pass
    from celeryapp.flows import layout

    store.forget(flow_id)
    store.client.delete(*layout.keys(flow_id)[:-1])


def test_a_workflow_stored_by_an_earlier_version_gets_a_clear_error(celery_app):
    """Workflows from before the per-step layout (one JSON document) are not read: waiting
    on or cancelling one says so instead of "never submitted"."""
    from celeryapp.flows import runtime

    flow_id = str(uuid.uuid4())
    client = runtime.store().client
    client.set(f"turbo:flow:{flow_id}", json.dumps({"id": flow_id, "steps": {}}), ex=60)
    try:
        for call in (flows.wait, flows.cancel):
            with pytest.raises(KeyError, match="stored by an earlier version"):
                call(flow_id)
        with pytest.raises(KeyError, match="expired or never submitted"):
            flows.wait(str(uuid.uuid4()))
    finally:
        client.delete(f"turbo:flow:{flow_id}")
