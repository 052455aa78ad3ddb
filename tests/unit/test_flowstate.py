"""core/flowstate.assemble builds a workflow's state from its records as one JSON text;
checked against a plain per-step reading of the same records (the reader it replaced)."""
from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from celeryapp.core import flowstate
from celeryapp.flows import layout

META = {"name": "f", "state": "running", "created": 1.5, "ended": None, "notify": None,
        "defaults": {}}


def reference(specs: dict, states: dict, infos: dict, results: dict) -> dict:
    """Each record decoded on its own and merged field by field."""
    steps = {}
    order = sorted(specs, key=lambda n: (json.loads(specs[n])["i"], n))
    for name in order:
        static = json.loads(specs[name])
        info = json.loads(infos.get(name, b"{}"))
        info.pop("claimed", None)
        info.pop("tag", None)
        step = {**flowstate.NO_INFO, "attempts": 0, **info,
                "state": states.get(name, b"?").decode(),
                "result": json.loads(results.get(name, b"null")),
                "kind": static["kind"], "needs": static["needs"], "spec": static["spec"]}
        if "added_by" in static:
            step["added_by"] = static["added_by"]
        steps[name.decode() if isinstance(name, bytes) else name] = step
    return steps


def records(steps: list[tuple[str, dict, str, dict | None, object]]):
    specs, states, infos, results = {}, {}, {}, {}
    for index, (name, spec, state, info, result) in enumerate(steps):
        key = name.encode()
        specs[key] = layout.static_json(index, spec).encode()
        states[key] = state.encode()
        if info is not None:
            infos[key] = json.dumps(info).encode()
        if result is not None:
            results[key] = json.dumps(result).encode()
    return specs, states, infos, results


def test_recorded_fields_replace_defaults_and_the_order_is_the_specs():
    specs, states, infos, results = records([
        ("b", {"kind": "query", "needs": [], "spec": {"query": "SELECT 1"}}, "succeeded",
         {"task_id": "t-b", "claimed": 1.0, "tag": "m-1", "queued": 2.0, "worker": "w",
          "attempts": 2, "started": 3.0, "ended": 4.0}, {"row_count": 1}),
        ("a", {"kind": "agent", "needs": ["b"], "spec": {"agent": "hi"}, "added_by": "b"},
         "pending", None, None),
    ])
    state = flowstate.assemble("id1", META, specs, states, infos, results)
    assert list(state["steps"]) == ["b", "a"]  # spec order, not name order
    b, a = state["steps"]["b"], state["steps"]["a"]
    assert b["task_id"] == "t-b" and b["attempts"] == 2 and b["queued"] == 2.0
    assert ("claimed" not in b and "tag" not in b and b["error"] is None
            and b["result"] == {"row_count": 1})
    assert a == {**flowstate.NO_INFO, "attempts": 0, "state": "pending", "result": None,
                 "kind": "agent", "needs": ["b"], "spec": {"agent": "hi"}, "added_by": "b"}
    assert state["steps"] == reference(specs, states, infos, results)


def test_str_keys_as_an_hmget_by_name_gives_them():
    specs, states, infos, results = records([
        ("x", {"kind": "task", "needs": [], "spec": {"task": "t"}}, "running",
         {"task_id": "t-x"}, None)])
    by_name = [{k.decode(): v for k, v in part.items()} for part in (specs, states, infos)]
    state = flowstate.assemble("id1", META, *by_name, {})
    assert state["steps"]["x"]["task_id"] == "t-x" and state["steps"]["x"]["state"] == "running"


def test_a_static_record_in_another_form_and_an_odd_name_still_read():
    specs = {b'we"ird': b'{ "kind": "query", "needs": [], "spec": {}, "i": 1 }',
             b"first": layout.static_json(0, {"kind": "query", "needs": [], "spec": {}}).encode()}
    state = flowstate.assemble("id1", META, specs, {b"first": b"pending"}, {}, {})
    assert list(state["steps"]) == ["first", 'we"ird']
    assert state["steps"]['we"ird']["kind"] == "query" and state["steps"]['we"ird']["state"] == "?"


def test_results_orjson_refuses_still_read():
    specs, states, infos, results = records([
        ("n", {"kind": "task", "needs": [], "spec": {}}, "succeeded", {}, {"value": math.nan}),
        ("big", {"kind": "task", "needs": [], "spec": {}}, "succeeded", {}, {"value": 2 ** 70}),
    ])
    steps = flowstate.assemble("id1", META, specs, states, infos, results)["steps"]
    assert (math.isnan(steps["n"]["result"]["value"])
            and steps["big"]["result"] == {"value": 2 ** 70})


def test_an_empty_workflow():
    assert flowstate.assemble("id1", META, {}, {}, {}, {})["steps"] == {}


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers(-2 ** 60, 2 ** 60) | st.text(max_size=8) \
    | st.floats(allow_nan=False, allow_infinity=False)
docs = st.dictionaries(st.sampled_from(["row_count", "engine", "value", "x"]), scalars, max_size=3)
infos_st = st.none() | st.fixed_dictionaries({}, optional={
    "task_id": st.text(max_size=10), "claimed": st.floats(0, 1e10), "tag": st.text(max_size=5),
    "queued": st.floats(0, 1e10),
    "worker": st.text(max_size=5), "attempts": st.integers(0, 9), "error": st.text(max_size=20),
    "skipped_because": names, "ended": st.floats(0, 1e10)})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, st.sampled_from(["query", "agent", "task"]),
                          st.sampled_from(flowstate.STATES), infos_st, st.none() | docs),
                unique_by=lambda row: row[0], max_size=12))
def test_agrees_with_reading_each_record_on_its_own(rows):
    specs, states, infos, results = records([
        (name, {"kind": kind, "needs": [], "spec": {"query": name}}, state, info, result)
        for name, kind, state, info, result in rows])
    got = flowstate.assemble("id1", META, specs, states, infos, results)["steps"]
    assert got == reference(specs, states, infos, results)
    assert list(got) == [row[0] for row in rows]
