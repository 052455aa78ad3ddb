"""Start one of this host's two workers with its settings: ``python -m celeryapp.worker.host``.

One command for systemd, compose and people. Each host runs two workers:

* ``turbo-worker`` (role ``cpu``): ``worker@<TURBO_HOST>``, prefork, one process per
  slot (``TURBO_WORKER_CONCURRENCY``, default the CPU count), consuming ``queries``
  (local DuckDB: CPU-bound) plus ``host.<name>``;
* ``turbo-worker --io`` (role ``io``): ``io@<TURBO_HOST>``, Celery's threads pool with
  many slots (``TURBO_IO_WORKER_CONCURRENCY``, default 64) in one process, consuming
  ``agents``, ``default`` (notices, workflow start) and ``warehouse`` (Databricks)
  plus ``host.<name>.io``: work that only waits on I/O.

``--role cpu|io`` (or ``TURBO_WORKER_ROLE``) picks the role; the flag wins. Each
keeps its revokes in its own state file so they survive restarts.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from celeryapp.config import Settings, get_settings
from celeryapp.core.names import CPU_ROLE, IO_ROLE, ROLES, host_queue, worker_node


def _queues(text: str) -> list[str]:
    return [q.strip() for q in text.split(",") if q.strip()]


def worker_argv(settings: Settings, role: str | None = None) -> list[str]:
    """The ``celery worker`` command of this host's worker in ``role`` (default: the
    settings' ``worker_role``)."""
    role = role or settings.worker_role
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}; use one of {', '.join(ROLES)}")
    state_dir = Path(settings.results_dir).parent / "state"
    if role == IO_ROLE:
        queues = _queues(settings.io_worker_queues)
        concurrency = settings.io_worker_concurrency
        pool = settings.io_worker_pool
        statedb = settings.io_worker_statedb or _beside(settings.worker_statedb, "io") or (
            state_dir / f"io-{settings.host}.db")
    else:
        queues = _queues(settings.worker_queues)
        concurrency = settings.worker_concurrency or os.cpu_count() or 1
        pool = settings.worker_pool
        statedb = settings.worker_statedb or state_dir / f"worker-{settings.host}.db"
    own = host_queue(settings.host, role)
    if own not in queues:
        queues.append(own)
    return [sys.executable, "-m", "celery", "-A", "celeryapp", "worker",
            "-n", worker_node(settings.host, role), "-Q", ",".join(queues),
            "-c", str(concurrency), "-P", pool, "-l", settings.worker_loglevel,
            f"--statedb={statedb}"]


def _beside(path: Path | None, role: str) -> Path | None:
    """``/var/lib/x/worker-state.db`` -> ``/var/lib/x/worker-state-io.db``: an io worker
    must not share the cpu worker's state file (two processes on one shelve)."""
    if path is None:
        return None
    path = Path(path)
    return path.with_name(f"{path.stem}-{role}{path.suffix}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=ROLES,
                        help="cpu: prefork worker@<host> (local queries); io: threads "
                             "io@<host> (agents, default, warehouse); default "
                             "TURBO_WORKER_ROLE, else cpu")
    parser.add_argument("--io", dest="role", action="store_const", const=IO_ROLE,
                        help="same as --role io")
    parser.add_argument("--cpu", dest="role", action="store_const", const=CPU_ROLE,
                        help="same as --role cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="more celery worker options, after --")
    args = parser.parse_args(argv)
    settings = get_settings()
    command = worker_argv(settings, args.role) + [a for a in args.extra if a != "--"]
    if args.dry_run:
        print(shlex.join(command))
        return
    statedb = next(a.split("=", 1)[1] for a in command if a.startswith("--statedb="))
    Path(statedb).parent.mkdir(parents=True, exist_ok=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
