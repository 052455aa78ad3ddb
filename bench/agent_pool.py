"""Agent runs on the io worker's threads pool against a prefork worker: makespan and memory.

N concurrent ``turbo.agent`` runs on one host, each a fake CLI that sleeps S seconds
(``bench/fakes/claude``: a shell and a ``sleep``, so the figures are the worker's, not
the fake's), through the real task: per-host agent slot, registry entry, process
group, pipes, result stored. Two workers, one after the other, on the same Redis:

* ``io``: ``-P threads -c N`` (the io worker, ``turbo-worker --io``): every run at once;
* ``prefork``: ``-P prefork -c P`` (what agent runs had before), P = 64 here: the most
  processes worth comparing on this 2-core, 24 GB machine (each slot is a Python
  process of ~35 MB PSS; 256 of them would be ~9 GB and take minutes to start).

makespan = first submit to the last result's ``date_done``; ideal = ceil(N / slots) x S,
the best any scheduler can do with that many slots; efficiency = ideal / makespan.
Memory: PSS (``/proc/<pid>/smaps_rollup``) of the worker's process tree - the main
process and its pool children - sampled while every slot runs (at S / 2 after the
submit) and idle before; the agent CLIs (own sessions, the same for both pools) are
counted apart. ``TURBO_AGENT_CONCURRENCY`` is raised to N for both (its default is the
io worker's concurrency; a cap below the slots would measure the cap).
Target: io efficiency >= 95 % with the io worker's PSS <= 250 MB.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celeryapp.dev.localworker import WorkerProcess

FAKE = Path(__file__).resolve().parent / "fakes" / "claude"
QUEUE = "agents"
TARGET_EFFICIENCY = 0.95
TARGET_IO_PSS_MB = 250.0
WARM_UP_S = 1.0


def _rollup_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:  # gone meanwhile
        return None
    return None


def tree_pss(pid: int) -> dict:
    """PSS of the worker (main + pool processes: its session) and of the agent CLIs
    below it (processes in sessions of their own), in MB."""
    import psutil

    sid = os.getsid(pid)
    worker, agents, count = [_rollup_mb(pid) or 0.0], 0.0, 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            own = os.getsid(child.pid) == sid
        except OSError:
            continue
        mb = _rollup_mb(child.pid)
        if mb is None:
            continue
        if own:
            worker.append(mb)
        else:
            agents += mb
            count += 1
    return {"worker_mb": round(sum(worker), 1), "processes": len(worker),
            "main_mb": round(worker[0], 1), "agent_processes": count,
            "agents_mb": round(agents, 1)}


@contextmanager
def agent_worker(ctx, pool: str, slots: int, runs: int) -> Iterator[WorkerProcess]:
    ctx.flush("turbo")
    ctx._started += 1
    worker = WorkerProcess(
        name=f"{pool}{ctx._started}@bench", queues=QUEUE, concurrency=slots, pool=pool,
        logfile=ctx.logs / f"agent-pool-{pool}-c{slots}.log",
        env={"TURBO_CLAUDE_BIN": str(FAKE), "TURBO_AGENT_CONCURRENCY": str(runs),
             "TURBO_HOST": f"bench{ctx._started}"})
    ctx.workers.append(worker)
    try:
        worker.start(ctx.app("turbo"), timeout=300)
        if pool == "prefork":
            ctx.wait_children(worker, slots, timeout=300)
        yield worker
    finally:
        worker.stop(timeout=60)
        ctx.workers.remove(worker)


def submit(run_agent, runs: int, seconds: float, tag: str) -> list[str]:
    from celeryapp.submit import batch

    with batch() as producer:
        return [run_agent.apply_async((f"{tag} {i} [fake:sleep={seconds:g}]",),
                                      {"timeout": 300}, queue=QUEUE, producer=producer).id
                for i in range(runs)]


def one_side(ctx, pool: str, slots: int, runs: int, seconds: float) -> dict:
    from tasks.agent import run_agent

    with agent_worker(ctx, pool, slots, runs) as worker:
        # warm-up: every slot runs one agent at the same time, so that each pool thread
        # or process exists and has its Redis connections, as in a worker that has been
        # busy before (a cold threads pool starts a thread and connects per slot)
        ctx.wait_results("turbo", submit(run_agent, slots, WARM_UP_S, "warm-up"), timeout=300)
        time.sleep(1.0)
        idle = tree_pss(worker.pid)
        cpu_before = _cpu_s(worker.pid)
        sampled: dict = {}
        start = time.time()
        ids = submit(run_agent, runs, seconds, "run")
        submit_s = time.time() - start
        sampler = threading.Timer(seconds / 2, lambda: sampled.update(tree_pss(worker.pid)))
        sampler.start()
        last = ctx.wait_results("turbo", ids, timeout=max(120, 20 * runs / slots * seconds))
        sampler.join()
        cpu = round(_cpu_s(worker.pid) - cpu_before, 2)
    makespan = last - start
    ideal = math.ceil(runs / slots) * seconds
    figures = {"pool": pool, "slots": slots, "runs": runs, "sleep_s": seconds,
               "makespan_s": round(makespan, 3), "ideal_s": ideal,
               "efficiency": round(ideal / makespan, 4), "submit_s": round(submit_s, 3),
               "pss_busy": sampled, "pss_idle": idle, "worker_cpu_s": cpu}
    ctx.say(f"agent_pool {pool} -c {slots}: {runs} x {seconds:g} s in {makespan:.2f} s "
            f"(ideal {ideal:g} s, {100 * ideal / makespan:.1f} %), worker PSS "
            f"{sampled.get('worker_mb', float('nan')):.0f} MB busy in "
            f"{sampled.get('processes', '?')} processes ({idle['worker_mb']:.0f} idle), "
            f"{sampled.get('agent_processes', '?')} CLI processes "
            f"{sampled.get('agents_mb', float('nan')):.0f} MB apart; worker CPU {cpu:.1f} s")
    return figures


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the worker's process tree so far (its session)."""
    import psutil

    main = psutil.Process(pid)
    sid = os.getsid(pid)
    total = sum(main.cpu_times()[:2])
    for child in main.children(recursive=True):
        try:
            if os.getsid(child.pid) == sid:
                total += sum(child.cpu_times()[:2])
        except (OSError, psutil.Error):
            continue
    return round(total, 2)


def run(ctx) -> dict:
    runs, seconds, io_slots, prefork_slots = (64, 1.0, 64, 16) if ctx.quick else \
        (256, 3.0, 256, 64)
    figures: dict = {"runs": runs, "sleep_s": seconds,
                     "targets": {"io_efficiency": TARGET_EFFICIENCY,
                                 "io_pss_mb": TARGET_IO_PSS_MB}}
    figures["io"] = io = one_side(ctx, "threads", io_slots, runs, seconds)
    figures["prefork"] = one_side(ctx, "prefork", prefork_slots, runs, seconds)
    pss = io["pss_busy"].get("worker_mb")
    figures["met"] = {"efficiency": io["efficiency"] >= TARGET_EFFICIENCY,
                      "pss": pss is not None and pss <= TARGET_IO_PSS_MB}
    ctx.say(f"agent_pool: io worker {100 * io['efficiency']:.1f} % of ideal (target "
            f"{100 * TARGET_EFFICIENCY:.0f} %), {pss} MB PSS (target <= "
            f"{TARGET_IO_PSS_MB:.0f} MB)")
    return figures
