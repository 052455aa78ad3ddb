"""Workflow spec validation: every problem named before anything is submitted."""
from __future__ import annotations

import pytest

from celeryapp.flows import prepare
from celeryapp.flows.spec import FlowSpecError, find_cycle, validate

GOOD = """
name: checkout-analysis
defaults: {retries: 2, timeout: 600, priority: normal}
steps:
  orders:   {query: "SELECT count(*) FROM orders WHERE day = $day", params: {day: "2026-11-01"}}
  sessions: {query: "SELECT 1", engine: duckdb}
  joined:   {needs: [orders, sessions], query: "SELECT {{ orders.rows[0][0] }}"}
  summary:  {needs: [joined], agent: "Summarise these rows: {{ joined.rows }}", profile: claude,
             priority: high}
"""


def problems(spec) -> str:
    with pytest.raises(FlowSpecError) as raised:
        validate(spec)
    return str(raised.value)


def test_the_issue_example_is_valid_and_defaults_apply(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD)
    spec = validate(path)
    assert list(spec.steps) == ["orders", "sessions", "joined", "summary"]
    assert spec.steps["orders"].retries == 2 and spec.steps["orders"].timeout == 600
    assert spec.steps["summary"].priority == "high"
    assert spec.steps["summary"].kind == "agent"
    flow_id, state = prepare(path)
    assert state["state"] == "running"
    assert {s["state"] for s in state["steps"].values()} == {"pending"}
    assert state["steps"]["joined"]["needs"] == ["orders", "sessions"]


def test_json_and_dict_forms():
    assert validate('{"name": "x",\n "steps": {"a": {"query": "SELECT 1"}}}').name == "x"
    assert validate({"name": "x", "steps": {"a": {"task": "turbo.query", "args": ["SELECT 1"]}}})


def test_unknown_needs_is_named():
    text = problems({"name": "x", "steps": {"a": {"query": "SELECT 1", "needs": ["ghost"]}}})
    assert "step 'a': needs unknown step 'ghost'" in text


def test_cycle_is_listed():
    text = problems({"name": "x", "steps": {
        "a": {"query": "SELECT 1", "needs": ["c"]},
        "b": {"query": "SELECT 1", "needs": ["a"]},
        "c": {"query": "SELECT 1", "needs": ["b"]},
        "d": {"query": "SELECT 1"}}})
    assert "cycle: " in text
    cycle = text.split("cycle: ")[1].split("\n")[0].split(" -> ")
    assert set(cycle) == {"a", "b", "c"} and cycle[0] == cycle[-1]


def test_missing_unknown_and_misplaced_fields():
    text = problems({"name": "x", "steps": {
        "a": {"quer": "SELECT 1"},
        "b": {"query": "SELECT 1", "profile": "claude"},
        "c": {"needs": []},
        "d": {"query": "SELECT 1", "agent": "hi"},
        "e": {"query": "SELECT 1", "priority": "urgent"}}})
    assert "step 'a': unknown field 'quer'" in text
    assert "step 'b': field 'profile' applies to agent steps only" in text
    assert "step 'c': needs exactly one of query, agent or task" in text
    assert "step 'd': needs exactly one of query, agent or task (has query, agent)" in text
    assert "step 'e': priority" in text
    assert "missing field 'steps'" in problems({"name": "x"})
    assert "missing field 'name'" in problems({"steps": {"a": {"query": "SELECT 1"}}})


def test_bad_reference_is_named():
    text = problems({"name": "x", "steps": {
        "a": {"query": "SELECT 1"},
        "b": {"query": "SELECT 2"},
        "c": {"needs": ["a"], "query": "SELECT {{ b.rows }}"}}})
    assert "step 'c': query refers to 'b', which is not a step it depends on (needs: a)" in text
    text = problems({"name": "x", "steps": {"a": {"query": "SELECT {{ a.rows "}}})
    assert "template error" in text


def test_unknown_registered_task_is_named():
    with pytest.raises(FlowSpecError, match="unknown task 'no.such.task'"):
        prepare({"name": "x", "steps": {"a": {"task": "no.such.task"}}})


def test_find_cycle_none_on_a_dag():
    spec = validate({"name": "x", "steps": {"a": {"query": "SELECT 1"},
                                            "b": {"query": "SELECT 1", "needs": "a"}}})
    assert find_cycle(spec.steps) is None


def test_agent_options_are_checked_as_delay_checks_them():
    spec = {"name": "f", "steps": {
        "a": {"agent": "hi", "permission_mode": "bogus"},
        "b": {"agent": "hi", "profile": "codex", "max_turns": 3},
        "c": {"agent": "hi {{ a.result }}", "needs": "a", "model": "{{ a.result }}"},
    }}
    with pytest.raises(FlowSpecError) as caught:
        validate(spec)
    problems = caught.value.problems
    assert any("step 'a'" in p and "must be one of acceptEdits" in p for p in problems)
    assert any("step 'b'" in p and "'max_turns' is not supported by agent profile 'codex'" in p
               for p in problems)
    assert not any("step 'c'" in p for p in problems)  # templated values are checked later
