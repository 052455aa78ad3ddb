"""Workflows at scale: ``flows.submit`` against Celery's own canvas, same tasks, same worker.

    python -m bench --only flow_scale             # 100 / 1,000 / 10,000 fan-out, 1,000 chain
    python -m bench --only flow_scale --quick     # 50 / 200 fan-out, 50 chain
    python -m bench.flow_scale --sizes 100,1000 --chain 200      # any sizes, this row alone

Shapes (every step is ``bench.noop`` on the project's worker, queue ``bench``, 2 slots):

* fan-out/fan-in of N: N independent steps, then one step that needs all of
  them. Canvas: ``chord(group(noop.si() x N), noop.si())``.
* chain of N: N steps, each needing the one before. Canvas: ``chain(noop.si() x N)``.

For each shape a fresh worker is started (Redis database flushed), warmed up
with a small chord and a small workflow, then the canvas runs, then the
workflow, one after the other on that same worker. Time: submit to the final
state, both ends stamped by the worker (the chord body's / last chain link's
``date_done``; the workflow's ``ended``), so polling does not count; the time
the client saw the end is kept too. Overhead beyond the canvas: (workflow -
canvas) / N per fan-out step, / (N - 1) per chain edge.

A workflow gets max(120 s, 5 x its canvas time) (at most BENCH_FLOW_SCALE_MAX_S,
default 3600 s) and is reported as "did not finish in X s" past it; the worker
is then stopped, so nothing it left runs into the next shape.

Redis memory per step, what each run leaves behind: MEMORY USAGE summed over
the project's database before and after, split into task results
(``celery-task-meta-*``, both sides store one per step) and every other key
(the workflow's state; chord counters; queues, empty by then); also the
growth of INFO ``used_memory`` (whole server, noisier), and for the workflow
right after ``submit`` (its state plus the first wave of queued messages).

Sizes from the environment when run through ``python -m bench``:
BENCH_FLOW_SCALE_SIZES (fan-out sizes, comma-separated, e.g. "100,1000"),
BENCH_FLOW_SCALE_CHAIN (chain lengths; "" or "0" for none),
BENCH_FLOW_SCALE_SLOTS (worker concurrency, default 2), BENCH_FLOW_SCALE_MAX_S.
Only the public workflow API is used (submit, wait, get_state, flow_report).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SIZES = (100, 1000, 10000)
CHAINS = (1000,)
QUICK_SIZES = (50, 200)
QUICK_CHAINS = (50,)
MIN_DEADLINE_S = 120.0
DEADLINE_FACTOR = 5.0


# --- configuration ----------------------------------------------------------------------
def _ints(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if text is None:
        return default
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part and int(part) > 0)


def shapes(quick: bool, sizes: str | None = None, chains: str | None = None) -> list[tuple]:
    """[(kind, n)], kind "fanout" or "chain": arguments, else environment, else defaults."""
    sizes = sizes if sizes is not None else os.environ.get("BENCH_FLOW_SCALE_SIZES")
    chains = chains if chains is not None else os.environ.get("BENCH_FLOW_SCALE_CHAIN")
    fan = _ints(sizes, QUICK_SIZES if quick else SIZES)
    chn = _ints(chains, QUICK_CHAINS if quick else CHAINS)
    return [("fanout", n) for n in fan] + [("chain", n) for n in chn]


def label(kind: str, n: int) -> str:
    return f"fan-out/fan-in, {n:,} steps" if kind == "fanout" else f"chain, {n:,} steps"


# --- the two sides ------------------------------------------------------------------------
def flow_spec(kind: str, n: int, queue: str) -> dict:
    width = len(str(n))
    names = [f"s{i:0{width}d}" for i in range(n)]
    steps: dict[str, dict] = {}
    if kind == "fanout":
        for name in names:
            steps[name] = {"task": "bench.noop", "queue": queue}
        steps["join"] = {"task": "bench.noop", "queue": queue, "needs": names}
    else:
        for i, name in enumerate(names):
            steps[name] = {"task": "bench.noop", "queue": queue,
                           **({"needs": [names[i - 1]]} if i else {})}
    return {"name": f"bench-{kind}-{n}", "steps": steps}


def canvas(ctx, kind: str, n: int):
    from celery import chain, chord, group

    noop = ctx.task("turbo", "noop")
    if kind == "fanout":
        return chord(group(noop.si() for _ in range(n)), noop.si())
    return chain(*(noop.si() for _ in range(n)))


def used_memory(ctx) -> int:
    return int(ctx.client("turbo").info("memory")["used_memory"])


def keyspace(ctx) -> dict[str, int]:
    """MEMORY USAGE summed over the project's database: task results vs everything else."""
    from .context import META_PREFIX

    client = ctx.client("turbo")
    sizes = {"results": 0, "other": 0}
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            kind = "results" if key.startswith(META_PREFIX.encode()) else "other"
            sizes[kind] += size or 0
        batch.clear()

    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    return sizes


def grown(before: dict, after: dict, n: int) -> dict[str, float]:
    return {kind: (after[kind] - before[kind]) / n for kind in before}


def run_canvas(ctx, kind: str, n: int, timeout: float) -> dict:
    signature = canvas(ctx, kind, n)  # built before the clock, as the workflow's spec is
    keys0, mem0 = keyspace(ctx), used_memory(ctx)
    start = time.time()
    result = signature.apply_async()  # the chord body's / the last link's result
    submitted = time.time()
    done = ctx.wait_results("turbo", [result.id], timeout=timeout, interval=0.02)
    seen = time.time()
    return {"wall_s": done - start, "seen_s": seen - start, "submit_s": submitted - start,
            "redis_bytes_per_step": (used_memory(ctx) - mem0) / n,
            "key_bytes_per_step": grown(keys0, keyspace(ctx), n)}


def _counts(state: dict) -> dict:
    steps = state.get("steps")
    if isinstance(steps, dict):
        counts: dict[str, int] = {}
        for step in steps.values():
            key = step.get("state", "?") if isinstance(step, dict) else "?"
            counts[key] = counts.get(key, 0) + 1
        return counts
    summary = state.get("summary") or state.get("counts")
    return dict(summary) if isinstance(summary, dict) else {}


def run_flow(ctx, kind: str, n: int, deadline: float) -> dict:
    from bench.turbo_tasks import QUEUE
    from celeryapp import flows

    spec = flow_spec(kind, n, QUEUE)
    keys0, mem0 = keyspace(ctx), used_memory(ctx)
    start = time.time()
    flow_id = flows.submit(spec)
    submitted = time.time()
    mem_submit = used_memory(ctx)
    interval = 0.02 if n <= 200 else 0.1 if n <= 2000 else 0.25
    figures = {"flow_id": flow_id, "submit_s": submitted - start, "deadline_s": deadline,
               "redis_bytes_per_step_after_submit": (mem_submit - mem0) / n}
    try:
        state = flows.wait(flow_id, timeout=max(1.0, deadline - (submitted - start)),
                           interval=interval)
    except TimeoutError:
        state = flows.get_state(flow_id) or {}
        figures.update(finished=False, seen_s=time.time() - start, states=_counts(state))
        return figures
    seen = time.time()
    ended = state.get("ended")
    figures.update(finished=True, state=state.get("state"), seen_s=seen - start,
                   wall_s=(ended - start) if isinstance(ended, (int, float)) else seen - start,
                   redis_bytes_per_step=(used_memory(ctx) - mem0) / n,
                   key_bytes_per_step=grown(keys0, keyspace(ctx), n))
    if state.get("state") != "succeeded":
        figures["states"] = _counts(state)
        report = flows.flow_report(state)
        failed = {name: s for name, s in (report.get("steps") or {}).items()
                  if isinstance(s, dict) and s.get("state") not in ("succeeded", None)}
        figures["failed_steps"] = dict(list(failed.items())[:5])
    reads = []
    for _ in range(5):
        begun = time.perf_counter()
        flows.get_state(flow_id)
        reads.append((time.perf_counter() - begun) * 1000)
    figures["get_state_ms"] = sorted(reads)[len(reads) // 2]
    return figures


def warm_up(ctx) -> None:
    from celery import chord

    from bench.turbo_tasks import QUEUE
    from celeryapp import flows

    noop = ctx.task("turbo", "noop")
    ctx.wait_results("turbo", [noop.delay().id for _ in range(4)])
    ctx.wait_results("turbo", [chord(noop.si() for _ in range(10))(noop.si()).id], timeout=120)
    state = flows.wait(flows.submit(flow_spec("fanout", 10, QUEUE)), timeout=120, interval=0.02)
    if state["state"] != "succeeded":
        raise RuntimeError(f"warm-up workflow ended {state['state']}: "
                           f"{flows.flow_report(state)}")


# --- one shape ---------------------------------------------------------------------------------
def run_shape(ctx, kind: str, n: int, slots: int, cap: float) -> dict:
    edges = n if kind == "fanout" else n - 1
    row: dict = {"kind": kind, "steps": n, "edges_counted": edges, "slots": slots}
    with ctx.worker("turbo", slots):
        warm_up(ctx)
        canvas_timeout = min(cap, max(300.0, 0.5 * n))
        try:
            row["canvas"] = run_canvas(ctx, kind, n, canvas_timeout)
        except TimeoutError:
            row["canvas"] = {"finished": False, "deadline_s": canvas_timeout}
            ctx.say(f"{label(kind, n)}: canvas did not finish in {canvas_timeout:.0f} s; "
                    f"workflow not run")
            return row
        canvas_s = row["canvas"]["wall_s"]
        deadline = min(cap, max(MIN_DEADLINE_S, DEADLINE_FACTOR * canvas_s))
        flow = run_flow(ctx, kind, n, deadline)
        row["workflow"] = flow
    if flow.get("finished"):
        row["ratio"] = flow["wall_s"] / canvas_s
        row["beyond_canvas_ms"] = (flow["wall_s"] - canvas_s) / edges * 1000
    ctx.say(f"{label(kind, n)}: {line(row)}")
    return row


def line(row: dict) -> str:
    canvas, flow = row.get("canvas", {}), row.get("workflow", {})
    if "wall_s" not in canvas:
        return "canvas did not finish"
    if not flow.get("finished"):
        return (f"canvas {canvas['wall_s']:.2f} s, workflow did not finish in "
                f"{flow.get('deadline_s', 0):.0f} s ({flow.get('states')})")
    text = (f"canvas {canvas['wall_s']:.2f} s, workflow {flow['wall_s']:.2f} s "
            f"(submit {flow['submit_s']:.2f} s) = {row['ratio']:.2f}x, "
            f"{row['beyond_canvas_ms']:+.2f} ms per {'step' if row['kind'] == 'fanout' else 'edge'}"
            f" beyond the canvas; get_state {flow.get('get_state_ms', float('nan')):.1f} ms; "
            f"Redis per step {memory(flow)} (canvas {memory(canvas)}), used_memory "
            f"{flow.get('redis_bytes_per_step', 0):+.0f} B (canvas "
            f"{canvas.get('redis_bytes_per_step', 0):+.0f} B)")
    if flow.get("state") != "succeeded":
        text += f"; workflow ended {flow.get('state')}: {flow.get('states')}"
    return text


def memory(side: dict) -> str:
    """Key bytes left per step: results + everything else (the workflow's state)."""
    grew = side.get("key_bytes_per_step") or {}
    return f"{grew.get('other', 0):+.0f} B + results {grew.get('results', 0):+.0f} B"


def markdown(rows: list[dict], slots: int) -> str:
    out = ["| shape | Celery canvas s | workflow s | ratio | per step beyond the canvas (ms) "
           "| Redis key bytes per step, workflow (canvas) | get_state ms |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        kind, n = row["kind"], row["steps"]
        shape = (f"fan-out/fan-in, {n:,} steps (chord)" if kind == "fanout"
                 else f"chain, {n:,} steps (per edge)")
        canvas, flow = row.get("canvas", {}), row.get("workflow", {})
        if "wall_s" not in canvas:
            cells = [f"did not finish in {canvas.get('deadline_s', 0):.0f} s", "not run", "", "",
                     "", ""]
        elif not flow.get("finished"):
            cells = [f"{canvas['wall_s']:.2f}",
                     f"did not finish in {flow.get('deadline_s', 0):.0f} s",
                     f"> {flow.get('deadline_s', 0) / canvas['wall_s']:.1f}x", "", "", ""]
        else:
            wall = f"{flow['wall_s']:.2f}"
            if flow.get("state") != "succeeded":
                wall += f" ({flow.get('state')})"
            cells = [f"{canvas['wall_s']:.2f}", wall, f"{row['ratio']:.2f}x",
                     f"{row['beyond_canvas_ms']:+.2f}",
                     f"{memory(flow)} ({memory(canvas)})",
                     f"{flow.get('get_state_ms', float('nan')):.1f}"]
        out.append("| " + " | ".join([shape, *cells]) + " |")
    out.append(f"\nOne worker, -c {slots}, every step bench.noop; canvas and workflow on the "
               f"same worker, one after the other; submit to the worker-stamped end.")
    return "\n".join(out)


def run(ctx, sizes: str | None = None, chains: str | None = None) -> dict:
    slots = int(os.environ.get("BENCH_FLOW_SCALE_SLOTS", "2"))
    cap = float(os.environ.get("BENCH_FLOW_SCALE_MAX_S", "3600"))
    todo = shapes(ctx.quick, sizes, chains)
    rows = []
    for kind, n in todo:
        try:
            rows.append(run_shape(ctx, kind, n, slots, cap))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one shape must not hide the others
            ctx.say(f"{label(kind, n)}: {type(exc).__name__}: {exc}")
            rows.append({"kind": kind, "steps": n, "error": f"{type(exc).__name__}: {exc}"})
    table = markdown([r for r in rows if "error" not in r], slots)
    print(table, flush=True)
    return {"slots": slots, "task": "bench.noop", "shapes": rows, "table_md": table,
            "min_deadline_s": MIN_DEADLINE_S, "deadline_factor": DEADLINE_FACTOR}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_scale",
                                     description="workflow vs canvas at scale (this row alone)")
    parser.add_argument("--quick", action="store_true", help="50 / 200 fan-out, 50 chain")
    parser.add_argument("--sizes", help="fan-out sizes, comma-separated (default 100,1000,10000)")
    parser.add_argument("--chain", help="chain lengths, comma-separated; '' or 0 for none")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    from .context import BenchContext

    with BenchContext.open(quick=args.quick) as ctx:
        figures = run(ctx, args.sizes, args.chain)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2, default=str))
    return 1 if any("error" in row for row in figures["shapes"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
