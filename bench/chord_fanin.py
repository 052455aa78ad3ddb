"""Chord fan-in: 1,000 header tasks -> time from the last header's end to the body's start.

Headers (``bench.stamp``) return ``time.time()`` as they end; the body
(``bench.fan_in``) records when it starts and the latest header stamp, so the
gap includes storing the last result, the chord counter, fetching the header
results and publishing + receiving the body. Both sides on Redis' native chord
counter; 2 worker processes; the median of a few repeats is reported.
"""
from __future__ import annotations

import time

from celery import chord

from .context import median


def run(ctx) -> dict:
    headers = 100 if ctx.quick else 1000
    repeats = 1 if ctx.quick else 3
    figures: dict = {"headers": headers, "repeats": repeats}
    for side in ("plain", "turbo"):
        stamp, fan_in = ctx.task(side, "stamp"), ctx.task(side, "fan_in")
        runs = []
        with ctx.worker(side, 2):
            chord([stamp.s() for _ in range(10)])(fan_in.s()).get(timeout=120)  # warm-up
            for _ in range(repeats):
                start = time.time()
                result = chord([stamp.s() for _ in range(headers)])(fan_in.s())
                body = result.get(timeout=600)
                assert body["headers"] == headers, body
                runs.append({"lag_ms": (body["start"] - body["last_header_end"]) * 1000,
                             "total_s": body["start"] - start})
        lag = median([r["lag_ms"] for r in runs])
        figures[side] = {"lag_ms": lag, "runs": runs}
        each = ", ".join(f"{r['lag_ms']:.1f}" for r in runs)
        ctx.say(f"chord {side}: body starts {lag:.1f} ms after the last of {headers} headers "
                f"(runs: {each} ms)")
    return figures
