"""No-op end-to-end throughput, results stored: one host, 2 worker processes.

Time from the first ``bench.noop.delay()`` to the last result stored (the
worker's ``date_done``); the submits run while the worker already consumes.
With ``--profile`` (py-spy from the bench extra, PATH or BENCH_PYSPY), the worker's
main process and its pool children are sampled during the run; the top frames are printed
and the raw stacks kept in var/bench/. With ``--ablate``, the project's side
runs again with each per-task cost switched off in turn (bench/turbo_variant.py),
then all of them at once.

Each side runs three times, alternating with the other, and reports its median
round (the machine's speed drifts by more than the differences measured). A second
set of rounds submits the 5,000 as one group: plain ``group.apply_async()``
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


class CpuMeter:
    """CPU seconds (user + system) of the client (this process), the worker's main
    process, its pool children and Redis while the block runs, per task: less noisy
    than the wall time on a shared machine, and it says who pays."""

    def __init__(self, ctx, worker):
        import psutil

        main = psutil.Process(worker.pid)
        self.processes = {"client": [psutil.Process()], "worker_main": [main],
                          "pool_children": main.children(), "redis": []}
        redis_process = getattr(ctx.redis, "process", None)
        if redis_process is not None:
            self.processes["redis"] = [psutil.Process(redis_process.pid)]
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        def cpu(process) -> float:
            times = process.cpu_times()
            return times.user + times.system

        return {role: sum(cpu(p) for p in processes)
                for role, processes in self.processes.items()}

    def per_task_ms(self, n: int) -> dict[str, float]:
        end = self._read()
        used = {role: round((end[role] - self.start[role]) / n * 1000, 3) for role in end}
        used["total"] = round(sum(used.values()), 3)
        return used


def once(ctx, side: str, n: int, concurrency: int, off: tuple[str, ...] = (),
         label: str | None = None, submit=_submit_one_by_one) -> dict:
    noop = ctx.task(side, "noop")
    with ctx.worker(side, concurrency, off=off) as worker:
        ctx.wait_results(side, [noop.delay().id for _ in range(50)], timeout=120)  # warm-up
        with profile.sampling(ctx, worker, f"throughput-{label or side}"):
            meter = CpuMeter(ctx, worker)
            start = time.time()
            ids = submit(noop, n)
            submitted = time.time()
            last = ctx.wait_results(side, ids, timeout=600)
            cpu = meter.per_task_ms(n)
    wall = last - start
    ctx.say(f"throughput {label or side}: {n} no-ops in {wall:.2f} s = {n / wall:.0f}/s "
            f"(submitting took {submitted - start:.2f} s); CPU ms/task "
            + ", ".join(f"{role} {ms:.2f}" for role, ms in cpu.items()))
    return {"wall_s": wall, "submit_s": submitted - start, "tasks_per_s": n / wall,
            "per_task_ms": wall / n * 1000, "cpu_ms_per_task": cpu}


def _median_of_rounds(ctx, rounds: int, n: int, concurrency: int, submit_for=None,
                      suffix: str = "") -> dict:
    """Both sides ``rounds`` times, alternating, so that the machine's drift weighs on
    both alike; each side's figures are its median round, with every round kept."""

    runs: dict[str, list[dict]] = {"plain": [], "turbo": []}
    for _ in range(rounds):
        for side in runs:
            submit = submit_for(side) if submit_for else _submit_one_by_one
            runs[side].append(once(ctx, side, n, concurrency, label=side + suffix,
                                   submit=submit))
    return rounds_figures(runs)


def rounds_figures(runs: dict[str, list[dict]]) -> dict:
    """Each side's median round (every round's tasks/s kept) and turbo/plain ratios."""
    from .context import median

    figures: dict = {}
    for side, results in runs.items():
        middle = median([r["tasks_per_s"] for r in results])
        best = min(results, key=lambda r: abs(r["tasks_per_s"] - middle))
        figures[side] = {**best, "tasks_per_s": middle,
                         "rounds": [round(r["tasks_per_s"], 1) for r in results]}
    figures["ratio"] = figures["turbo"]["tasks_per_s"] / figures["plain"]["tasks_per_s"]
    figures["round_ratios"] = [round(t["tasks_per_s"] / p["tasks_per_s"], 2)
                               for p, t in zip(runs["plain"], runs["turbo"], strict=True)]
    return figures


def run(ctx) -> dict:
    n = 500 if ctx.quick else 5000
    rounds = 1 if ctx.quick else 3
    concurrency = 2
    figures: dict = {"tasks": n, "concurrency": concurrency, "rounds": rounds,
                     **_median_of_rounds(ctx, rounds, n, concurrency)}
    figures["as_group"] = _median_of_rounds(ctx, rounds, n, concurrency,
                                            submit_for=_submit_as_group, suffix=" as a group")
    ctx.say(f"throughput: turbo/plain {figures['ratio']:.2f} (rounds "
            f"{figures['round_ratios']}), as a group {figures['as_group']['ratio']:.2f} "
            f"(rounds {figures['as_group']['round_ratios']})")
    if ctx.ablate:
        from .turbo_variant import KNOWN

        figures["ablation"] = {}
        for off in [(name,) for name in KNOWN] + [KNOWN]:
            label = "turbo without " + "+".join(off)
            figures["ablation"]["+".join(off)] = once(ctx, "turbo", n, concurrency, off, label)
    return figures
