"""Worker memory per slot at -c 4: PSS (``/proc/<pid>/smaps_rollup``) of the main
process and its pool children, summed, divided by the slots.

Agent Turbo: measured after every pool child ran a DuckDB query through
turbo.query's code and imported pyarrow (``bench.load_engines``). Plain Celery:
idle (its tasks load nothing). PSS shares the pages the children still share
with the main process (fork copy-on-write) fairly between them.
"""
from __future__ import annotations

import time
from pathlib import Path


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss line for pid {pid}")


def measure(pid: int) -> dict:
    import psutil

    main = psutil.Process(pid)
    children = main.children(recursive=True)
    per_process = {"main": pss_kb(pid) / 1024,
                   "children": [pss_kb(child.pid) / 1024 for child in children]}
    total = per_process["main"] + sum(per_process["children"])
    return {"total_mb": total, **per_process}


def load_every_child(ctx, worker, slots: int) -> set[int]:
    """Run ``bench.load_engines`` until each pool process has run it at least once."""
    load = ctx.task("turbo", "load_engines")
    children = set(ctx.wait_children(worker, slots))
    seen: set[int] = set()
    for _ in range(10):
        results = [load.delay(0.5) for _ in range(slots)]
        seen |= {r.get(timeout=120)["pid"] for r in results}
        if children <= seen:
            break
    return children - seen


def run(ctx) -> dict:
    slots = 4
    figures: dict = {"slots": slots, "unit": "MB"}
    for side in ("plain", "turbo"):
        with ctx.worker(side, slots) as worker:
            time.sleep(1.0)  # let the pool processes finish starting
            idle = measure(worker.pid)
            missed: set[int] = set()
            if side == "turbo":
                missed = load_every_child(ctx, worker, slots)
                time.sleep(1.0)  # let the pool go idle
                mem = measure(worker.pid)
            else:
                mem = idle
        figures[side] = {"per_slot_mb": mem["total_mb"] / slots, **mem,
                         "idle_per_slot_mb": idle["total_mb"] / slots, "idle": idle,
                         "engines_loaded": side == "turbo",
                         "children_without_engines": len(missed)}
        ctx.say(f"memory {side}: {mem['total_mb']:.1f} MB PSS for -c {slots} = "
                f"{mem['total_mb'] / slots:.1f} MB per slot (main {mem['main']:.1f} MB, "
                f"children {', '.join(f'{c:.1f}' for c in mem['children'])} MB; "
                f"idle {idle['total_mb'] / slots:.1f} MB per slot)")
    return figures
