"""A task that takes its worker process down with it, for tests of worker-lost handling.

Loaded into a test worker with ``-I support.crash_task`` (PYTHONPATH=tests)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from celeryapp import app

CRASH_TASK = "tests.crash_process"


def crash_worker(start_worker, queue: str, **env):
    """A test worker (the ``start_worker`` fixture) on ``queue`` that has this task."""
    tests_dir = str(Path(__file__).resolve().parents[1])
    return start_worker(queues=queue, concurrency=1, extra_args=("-I", "support.crash_task"),
                        env={"PYTHONPATH": os.pathsep.join(filter(None, [
                            tests_dir, os.environ.get("PYTHONPATH")])), **env})


@app.task(name=CRASH_TASK)
def crash_process(marker: str, times: int = -1) -> str:
    """Note a run in ``marker``; SIGKILL this pool process for the first ``times`` runs
    (-1: every run, a poison message); afterwards return how many runs it took."""
    path = Path(marker)
    with path.open("a") as handle:
        handle.write(f"{os.getpid()}\n")
    runs = len(path.read_text().splitlines())
    if times < 0 or runs <= times:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"ran {runs} times"
