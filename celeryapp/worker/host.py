"""Start this host's worker with its settings: ``python -m celeryapp.worker.host``.

One command for systemd, compose and people: the worker is named
``worker@<TURBO_HOST>``, consumes the shared queues plus its own host queue
(``host.<name>``, for work pinned to this host), and keeps revokes in a state
file so they survive restarts.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from celeryapp.config import Settings, get_settings
from celeryapp.core.names import host_queue


def worker_argv(settings: Settings) -> list[str]:
    queues = [q.strip() for q in settings.worker_queues.split(",") if q.strip()]
    own = host_queue(settings.host)
    if own not in queues:
        queues.append(own)
    statedb = settings.worker_statedb or (
        Path(settings.results_dir).parent / "state" / f"worker-{settings.host}.db")
    concurrency = settings.worker_concurrency or os.cpu_count() or 1
    return [sys.executable, "-m", "celery", "-A", "celeryapp", "worker",
            "-n", f"worker@{settings.host}", "-Q", ",".join(queues), "-c", str(concurrency),
            "-P", settings.worker_pool, "-l", settings.worker_loglevel,
            f"--statedb={statedb}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="more celery worker options, after --")
    args = parser.parse_args(argv)
    settings = get_settings()
    command = worker_argv(settings) + [a for a in args.extra if a != "--"]
    if args.dry_run:
        print(shlex.join(command))
        return
    statedb = next(a.split("=", 1)[1] for a in command if a.startswith("--statedb="))
    Path(statedb).parent.mkdir(parents=True, exist_ok=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
