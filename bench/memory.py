"""Worker memory per slot at -c 4: PSS (``/proc/<pid>/smaps_rollup``) of the main
process and its pool children, summed, divided by the slots.

Agent Turbo: measured after every pool child ran a DuckDB query through
turbo.query's code and imported pyarrow (``bench.load_engines``). Plain Celery:
idle (its tasks load nothing). PSS shares the pages the children still share
with the main process (fork copy-on-write) fairly between them.

Two things outside the worker move PSS by 10 MB per slot or more, so both are
controlled:

* How the libraries came into the page cache. A file that pip has just written is
  cached in large folios, and a process that touches one page of a library's code
  maps the whole folio: right after ``make venv`` the same worker measured 67 MB
  per slot, 55 MB once its libraries had been read back from disk (as after a
  reboot). Each side's worker starts after the venv's shared libraries are dropped
  from the page cache (``posix_fadvise(DONTNEED)``; pages that a running process
  maps stay).
* Other processes that map the same libraries take their share of each page: a
  bench client that has pyarrow loaded (``rows``, ``delay``) lowers the worker's
  figure. ``make bench`` runs this benchmark first; the figures say whether the
  client mapped the engines' libraries.
"""
from __future__ import annotations

import os
import sysconfig
import time
from pathlib import Path

ENGINE_LIBRARIES = ("libarrow.so", "_duckdb.")


def drop_library_cache() -> int:
    """Drop the cached pages of the venv's shared libraries that no process maps
    (the kernel keeps mapped ones); return how many files were advised."""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    advised = 0
    for root in roots:
        for path in Path(root).rglob("*.so*"):
            if not path.is_file():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                advised += 1
            finally:
                os.close(fd)
    return advised


def client_maps_engines() -> bool:
    """Whether this process (the bench client) maps pyarrow's or DuckDB's library."""
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    return any(name in maps for name in ENGINE_LIBRARIES)


def rollup_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    if "Pss" not in fields:
        raise RuntimeError(f"no Pss line for pid {pid}")
    return fields


def measure(pid: int) -> dict:
    """PSS of the worker's processes, and their USS (private pages only). PSS splits a
    shared page among every process mapping it, other programs included: a client
    that has pyarrow loaded lowers the worker's PSS. USS does not depend on them."""
    import psutil

    main = psutil.Process(pid)
    rollups = [rollup_kb(pid)] + [rollup_kb(child.pid)
                                  for child in main.children(recursive=True)]
    pss = [r["Pss"] / 1024 for r in rollups]
    uss = sum(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0) for r in rollups) / 1024
    return {"total_mb": sum(pss), "uss_total_mb": uss, "main": pss[0], "children": pss[1:]}


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


def worker_memory(ctx, side: str, slots: int) -> dict:
    """One side's worker at ``-c slots``: PSS/USS, with the engines loaded (turbo)."""
    dropped = drop_library_cache()
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
    return {"per_slot_mb": mem["total_mb"] / slots, **mem,
            "uss_per_slot_mb": mem["uss_total_mb"] / slots,
            "idle_per_slot_mb": idle["total_mb"] / slots, "idle": idle,
            "engines_loaded": side == "turbo", "children_without_engines": len(missed),
            "library_files_dropped_from_cache": dropped}


def run(ctx) -> dict:
    """-c 4 is the figure held against the target; 8 and 16 show how the worker's fixed
    cost (the engines' code, the main process) and its cost per added slot split."""
    slots = 4
    more = () if ctx.quick else (8, 16)
    figures: dict = {"slots": slots, "unit": "MB",
                     "client_maps_engines": client_maps_engines(), "more_slots": {}}
    for side in ("plain", "turbo"):
        figures[side] = mem = worker_memory(ctx, side, slots)
        ctx.say(f"memory {side}: {mem['total_mb']:.1f} MB PSS for -c {slots} = "
                f"{mem['per_slot_mb']:.1f} MB per slot, USS {mem['uss_per_slot_mb']:.1f} "
                f"(main {mem['main']:.1f} MB, "
                f"children {', '.join(f'{c:.1f}' for c in mem['children'])} MB; "
                f"idle {mem['idle_per_slot_mb']:.1f} MB per slot)")
    for count in more:
        row = figures["more_slots"][str(count)] = {}
        for side in ("plain", "turbo"):
            mem = worker_memory(ctx, side, count)
            row[side] = {key: mem[key] for key in ("total_mb", "per_slot_mb", "uss_per_slot_mb",
                                                   "main", "children_without_engines")}
        ctx.say(f"memory -c {count}: PSS per slot plain {row['plain']['per_slot_mb']:.1f} MB, "
                f"turbo {row['turbo']['per_slot_mb']:.1f} MB")
    if len(more) == 2:
        low, high = (figures["more_slots"][str(c)] for c in more)
        figures["added_slot_mb"] = {
            side: (high[side]["total_mb"] - low[side]["total_mb"]) / (more[1] - more[0])
            for side in ("plain", "turbo")}
        ctx.say(f"memory: each slot added (-c {more[0]} -> {more[1]}) costs plain "
                f"{figures['added_slot_mb']['plain']:.1f} MB, turbo "
                f"{figures['added_slot_mb']['turbo']:.1f} MB of PSS")
    if figures["client_maps_engines"]:
        ctx.say("memory: this bench process maps pyarrow/DuckDB (an earlier benchmark loaded "
                "them) and takes its share of their pages: the worker's PSS reads lower")
    return figures
