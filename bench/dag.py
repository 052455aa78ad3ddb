"""DAG makespan vs its critical path, for a graph that is not series-parallel.

    A (1 s) -> C (2 s)        critical path A -> C = 3 s (B -> D is 2 + 1 = 3 s too)
    A, B (2 s) -> D (1 s)

Agent Turbo: ``flows.submit`` with ``task: bench.sleep`` steps (each step starts
when its own needs are done). Plain Celery: the best canvas a user can write,
``group(A, B) | group(C, D)`` (a chord: C waits for B though it needs only A),
so its floor is max(A, B) + max(C, D) = 4 s. Makespan: submit to the end of
the last step, from the steps' own start/end stamps; 2 worker processes.
"""
from __future__ import annotations

import time
import uuid

from celery import group

from .context import median

DURATIONS = {"A": 1.0, "B": 2.0, "C": 2.0, "D": 1.0}
NEEDS = {"A": [], "B": [], "C": ["A"], "D": ["A", "B"]}


def critical_path(durations: dict, needs: dict) -> float:
    finish: dict[str, float] = {}

    def end(step: str) -> float:
        if step not in finish:
            finish[step] = durations[step] + max((end(n) for n in needs[step]), default=0.0)
        return finish[step]

    return max(end(step) for step in durations)


def run_turbo(ctx, scale: float) -> dict:
    from celery.result import AsyncResult

    from bench.turbo_tasks import QUEUE
    from celeryapp import flows

    app = ctx.app("turbo")
    spec = {"name": "bench-dag", "steps": {
        name: {"task": "bench.sleep", "args": [DURATIONS[name] * scale], "queue": QUEUE,
               **({"needs": NEEDS[name]} if NEEDS[name] else {})}
        for name in DURATIONS}}
    start = time.time()
    flow_id = flows.submit(spec)
    state = flows.wait(flow_id, timeout=120, interval=0.02)
    if state["state"] != "succeeded":
        raise RuntimeError(f"workflow ended {state['state']}: {flows.flow_report(state)}")
    stamps = {name: AsyncResult(step["task_id"], app=app).get(timeout=30)
              for name, step in state["steps"].items()}
    return _figures(start, stamps)


def run_plain(ctx, scale: float) -> dict:
    sleep = ctx.task("plain", "sleep")
    sigs = {name: sleep.si(DURATIONS[name] * scale).set(task_id=str(uuid.uuid4()))
            for name in DURATIONS}
    start = time.time()
    (group(sigs["A"], sigs["B"]) | group(sigs["C"], sigs["D"])).apply_async()
    app = ctx.app("plain")
    stamps = {name: app.AsyncResult(sig.options["task_id"]).get(timeout=120)
              for name, sig in sigs.items()}
    return _figures(start, stamps)


def _figures(start: float, stamps: dict) -> dict:
    return {"makespan_s": max(s["end"] for s in stamps.values()) - start,
            "steps": {name: {"start_s": s["start"] - start, "end_s": s["end"] - start}
                      for name, s in sorted(stamps.items())}}


def run(ctx) -> dict:
    scale = 1.0
    repeats = 1 if ctx.quick else 3
    critical = critical_path({k: v * scale for k, v in DURATIONS.items()}, NEEDS)
    figures: dict = {"durations_s": DURATIONS, "needs": NEEDS, "critical_path_s": critical,
                     "repeats": repeats}
    for side, runner in (("plain", run_plain), ("turbo", run_turbo)):
        with ctx.worker(side, 2):
            ctx.wait_results(side, [ctx.task(side, "noop").delay().id for _ in range(4)])
            runner(ctx, 0.0)  # warm-up: first-use imports (validation, templates) on both ends
            runs = [runner(ctx, scale) for _ in range(repeats)]
        makespan = median([r["makespan_s"] for r in runs])
        figures[side] = {"makespan_s": makespan, "ratio": makespan / critical, "runs": runs}
        ctx.say(f"dag {side}: makespan {makespan:.3f} s = {makespan / critical:.3f} x the "
                f"critical path ({critical:g} s); steps {runs[-1]['steps']}")
    return figures
