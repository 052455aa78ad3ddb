"""``--fetch``: read task results by id in a process that did not submit them.

The demo runs ``python -m celeryapp.dev.demo --fetch NAME=ID ...`` after the
queries, to show that results live in Redis (and Parquet files), not in the
process that asked for them.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult

from celeryapp.dev.demo import report
from celeryapp.dev.demo.workload import Outcome


@dataclass
class StoredResult:
    """One task's result as another process reads it from the result backend."""

    name: str  # the label given on the command line ("" without one)
    task_id: str
    state: str
    value: Any  # the result dict on SUCCESS; None while not ready
    spilled_rows: int | None = None  # rows read back from its Parquet file, if it spilled

    @property
    def ok(self) -> bool:
        return self.state == "SUCCESS" and isinstance(self.value, dict)


def fetch_elsewhere(outcomes: list[Outcome]) -> int:
    """Fetch the results by id in a fresh process: they live in Redis, not in this one."""
    labels = [f"{outcome.name}={outcome.task_id}" for outcome in outcomes]
    report.fetching_elsewhere()
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--fetch",
                           *labels]).returncode


def fetch(labels: list[str]) -> int:
    """``--fetch [LABEL=]ID ...``: print stored results; exit 1 unless all succeeded."""
    # pyarrow only here: the demo process that imports this module never reads Parquet.
    from pyarrow.parquet import read_table as read_parquet  # as tasks.results.read_parquet

    # Not at module top: the app is built from the environment on first use, and the
    # demo imports this module before it sets that environment.
    from celeryapp import app

    results = []
    for label in labels:
        name, _, task_id = label.rpartition("=")
        handle = AsyncResult(task_id, app=app)
        value = handle.get(timeout=30, propagate=False) if handle.ready() else None
        result = StoredResult(name, task_id, handle.state, value)
        if result.ok and value.get("parquet_path"):
            result.spilled_rows = read_parquet(value["parquet_path"]).num_rows
        results.append(result)
    report.fetched(results)
    return 0 if all(result.ok for result in results) else 1
