"""Parallel efficiency: 200 tasks that each sleep 1 s, at 16, 32 and 64 slots on one host.

efficiency = (tasks / N x 1 s) / wall, wall = first submit to last result stored
(the issue's formula). With whole 1-s tasks the best possible wall is
ceil(tasks / N) s, so that formula tops out below 100 % whenever N does not
divide the task count (200 / 64: 3.125 / 4 = 78 %); ``schedule_efficiency``
measures against ceil(tasks / N) s, the best any scheduler can do.
"""
from __future__ import annotations

import math
import time


def run(ctx) -> dict:
    tasks, seconds = (32, 0.5) if ctx.quick else (200, 1.0)
    slots = (4, 8) if ctx.quick else (16, 32, 64)
    figures: dict = {"tasks": tasks, "sleep_s": seconds, "slots": list(slots)}
    for side in ("plain", "turbo"):
        sleep = ctx.task(side, "sleep")
        figures[side] = {}
        for n in slots:
            with ctx.worker(side, n):
                time.sleep(1.0)  # let the pool processes finish starting
                ctx.wait_results(side, [sleep.delay(0).id for _ in range(n)], timeout=120)
                start = time.time()
                ids = [sleep.delay(seconds).id for _ in range(tasks)]
                last = ctx.wait_results(side, ids, timeout=600)
            wall = last - start
            ideal = tasks / n * seconds
            best = math.ceil(tasks / n) * seconds
            figures[side][str(n)] = {"wall_s": wall, "ideal_s": ideal, "best_schedule_s": best,
                                     "efficiency": ideal / wall,
                                     "schedule_efficiency": best / wall}
            ctx.say(f"parallel {side} -c {n}: {tasks} x {seconds:g} s in {wall:.2f} s, "
                    f"efficiency {100 * ideal / wall:.1f}% (vs ceil schedule "
                    f"{100 * best / wall:.1f}%)")
    return figures
