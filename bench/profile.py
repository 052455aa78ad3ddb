"""Optional sampling of a worker with py-spy during a benchmark (``--profile``).

py-spy (the ``bench`` extra that ``make venv`` installs, PATH's, or
BENCH_PYSPY=/path/to/py-spy) samples the worker's main process and its pool
children from outside; only samples where
Python was on CPU count (py-spy's default). The raw stacks are written to
``<out dir>/profile-<label>.txt``; the summary splits the samples by process
(main vs pool children) and by what they were doing.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

# what a sample was doing: the first pattern found anywhere in its stack wins
CATEGORIES = (
    ("events (task-received/started/succeeded)", ("celery/events/",)),
    ("STARTED state (task_track_started)", ("mark_as_started",)),
    ("result store", ("celery/backends/",)),
    ("ack / reject", ("kombu/message.py", "basic_ack", "restore_visible")),
    ("project hooks (worker hooks and control, metrics, redaction)",
     ("celeryapp/worker/hooks.py", "celeryapp/worker/control.py", "celeryapp/worker/running.py",
      "celeryapp/monitoring/metrics.py", "celeryapp/overrides/redaction.py")),
    ("logging", ("logging/__init__.py", "celery/utils/log.py")),
    ("receive + dispatch to pool (kombu/celery consumer)",
     ("kombu/transport/", "celery/worker/consumer/", "celery/worker/strategy.py",
      "celery/worker/request.py", "celery/concurrency/", "billiard/")),
    ("task body + tracer", ("celery/app/trace.py",)),
)


def pyspy() -> str | None:
    """BENCH_PYSPY, else the venv's own (the bench extra), else PATH's."""
    beside = Path(sys.executable).with_name("py-spy")
    return (os.environ.get("BENCH_PYSPY") or (str(beside) if beside.exists() else None)
            or shutil.which("py-spy"))


@contextmanager
def sampling(ctx, worker, label: str):
    """Sample ``worker`` (main + children) while the block runs, if ``ctx.profile``."""
    binary = pyspy() if getattr(ctx, "profile", False) else None
    if not binary:
        if getattr(ctx, "profile", False):
            ctx.say(f"profile {label}: skipped, no py-spy (pip install '.[bench]' or set "
                    f"BENCH_PYSPY)")
        yield
        return
    out = ctx.out_dir / f"profile-{label}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "record", "--pid", str(worker.pid), "--subprocesses",
                             "--format", "raw", "--rate", "250", "--nonblocking",
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if out.exists():
        summary = summarize(out)
        ctx.profiles[label] = summary
        _print(ctx, label, summary)


def summarize(path: Path, top: int = 12) -> dict:
    roles: dict[str, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        depth = sum(1 for frame in frames if frame.startswith("process "))
        role = "main process" if depth <= 1 else "pool children"
        frames = [frame for frame in frames if not frame.startswith("process ")]
        entry = roles.setdefault(role, {"samples": 0, "categories": Counter(),
                                        "inclusive": Counter(), "self": Counter()})
        n = int(count)
        entry["samples"] += n
        entry["categories"][_category(frames)] += n
        for frame in set(frames):
            entry["inclusive"][frame] += n
        if frames:
            entry["self"][frames[-1]] += n
    return {role: {"samples": entry["samples"],
                   "categories": dict(entry["categories"].most_common()),
                   "inclusive": dict(entry["inclusive"].most_common(top * 2)),
                   "self": dict(entry["self"].most_common(top))}
            for role, entry in roles.items()}


def _category(frames: list[str]) -> str:
    for name, patterns in CATEGORIES:
        if any(pattern in frame for frame in frames for pattern in patterns):
            return name
    return "other"


def _print(ctx, label: str, summary: dict) -> None:
    for role, entry in summary.items():
        total = entry["samples"] or 1
        ctx.say(f"profile {label}, {role}: {entry['samples']} on-CPU samples")
        for name, n in entry["categories"].items():
            ctx.say(f"    {100 * n / total:5.1f}%  {name}")
