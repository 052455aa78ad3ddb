"""No-op end-to-end throughput, results stored: one host, 2 worker processes.

Time from the first ``bench.noop.delay()`` to the last result stored (the
worker's ``date_done``); the submits run while the worker already consumes.
With ``--profile`` (py-spy on PATH or BENCH_PYSPY), the worker's main process
and its pool children are sampled during the run; the top frames are printed
and the raw stacks kept in var/bench/. With ``--ablate``, the project's side
runs again with each per-task cost switched off in turn (bench/turbo_variant.py),
then all of them at once.

A second pair of runs submits the 5,000 as one group: plain ``group.apply_async()``
against ``celeryapp.submit.apply_group`` (one pipeline), the submitting client
competing for the same two cores as the workers.
"""
from __future__ import annotations

import time

from . import profile


def _submit_one_by_one(noop, n: int) -> list[str]:
    return [noop.delay().id for _ in range(n)]


def _submit_as_group(side: str):
    from celery import group

    from celeryapp.submit import apply_group

    def submit(noop, n: int) -> list[str]:
        signature = group(noop.s() for _ in range(n))
        result = apply_group(signature) if side == "turbo" else signature.apply_async()
        return [child.id for child in result.results]

    return submit


def once(ctx, side: str, n: int, concurrency: int, off: tuple[str, ...] = (),
         label: str | None = None, submit=_submit_one_by_one) -> dict:
    noop = ctx.task(side, "noop")
    with ctx.worker(side, concurrency, off=off) as worker:
        ctx.wait_results(side, [noop.delay().id for _ in range(50)], timeout=120)  # warm-up
        with profile.sampling(ctx, worker, f"throughput-{label or side}"):
            start = time.time()
            ids = submit(noop, n)
            submitted = time.time()
            last = ctx.wait_results(side, ids, timeout=600)
    wall = last - start
    ctx.say(f"throughput {label or side}: {n} no-ops in {wall:.2f} s = {n / wall:.0f}/s "
            f"(submitting took {submitted - start:.2f} s)")
    return {"wall_s": wall, "submit_s": submitted - start, "tasks_per_s": n / wall,
            "per_task_ms": wall / n * 1000}


def run(ctx) -> dict:
    n = 500 if ctx.quick else 5000
    concurrency = 2
    figures: dict = {"tasks": n, "concurrency": concurrency}
    for side in ("plain", "turbo"):
        figures[side] = once(ctx, side, n, concurrency)
    figures["ratio"] = figures["turbo"]["tasks_per_s"] / figures["plain"]["tasks_per_s"]
    figures["as_group"] = {side: once(ctx, side, n, concurrency, label=f"{side} as a group",
                                      submit=_submit_as_group(side))
                           for side in ("plain", "turbo")}
    grouped = figures["as_group"]
    grouped["ratio"] = grouped["turbo"]["tasks_per_s"] / grouped["plain"]["tasks_per_s"]
    if ctx.ablate:
        from .turbo_variant import KNOWN

        figures["ablation"] = {}
        for off in [(name,) for name in KNOWN] + [KNOWN]:
            label = "turbo without " + "+".join(off)
            figures["ablation"]["+".join(off)] = once(ctx, "turbo", n, concurrency, off, label)
    return figures
