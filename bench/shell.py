"""Shell submit and status wall time: a new process per call, as a person or agent runs it.

Agent Turbo: ``turbo submit query`` / ``turbo status ID`` (and ``celery -A
celeryapp call turbo.query`` for comparison). Plain Celery: ``celery -A
bench.plain_app call bench.noop`` / ``celery -A bench.plain_app result ID``
(the plain way to ask for a state from a shell; the result is stored first, so
it does not block). Timing helpers from bench/shell_wall.py; no worker runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .shell_wall import ROOT, time_command, turbo_command

BIN = Path(sys.executable).parent


def run(ctx) -> dict:
    n, slow_n = (4, 2) if ctx.quick else (30, 8)
    for side in ("plain", "turbo"):
        ctx.flush(side)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    turbo = turbo_command()
    celery = str(BIN / "celery")

    # a finished task on each side, for the status calls
    turbo_id = subprocess.run([*turbo, "submit", "query", "SELECT 1"], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    ctx.app("turbo").backend.store_result(
        turbo_id, {"columns": ["1"], "rows": [[1]], "row_count": 1, "truncated": False},
        "SUCCESS")
    plain_id = ctx.task("plain", "noop").delay().id
    ctx.app("plain").backend.store_result(plain_id, None, "SUCCESS")

    cases = {
        "floor": ("python -c pass", [sys.executable, "-c", "pass"], n),
        "plain_submit": ("celery -A bench.plain_app call bench.noop",
                         [celery, "-A", "bench.plain_app", "call", "bench.noop"], slow_n),
        "turbo_submit": ("turbo submit query", [*turbo, "submit", "query", "SELECT 1"], n),
        "turbo_celery_call": ("celery -A celeryapp call turbo.query",
                              [celery, "-A", "celeryapp", "call", "turbo.query",
                               "--args", json.dumps(["SELECT 1"])], slow_n),
        "plain_status": ("celery -A bench.plain_app result ID",
                         [celery, "-A", "bench.plain_app", "result", plain_id], slow_n),
        "turbo_status": ("turbo status ID", [*turbo, "status", turbo_id], n),
    }
    figures: dict = {"unit": "ms"}
    for key, (label, cmd, count) in cases.items():
        stats, _ = time_command(cmd, env, count)
        figures[key] = {"command": label, **stats}
        ctx.say(f"shell {label:<42} p50 {stats['p50_ms']:7.1f} ms  p90 "
                f"{stats['p90_ms']:7.1f} ms  (n={count})")
    for side in ("plain", "turbo"):  # the submitted messages: nobody consumes them
        ctx.flush(side)
    return figures
