"""Health checks for systemd timers, compose healthchecks and people.

``python -m celeryapp.monitoring.health live --worker worker@alpha [--timeout 30] [--attempts N]``
    Liveness that proves the worker *consumes*: a ``turbo.health.ping`` task goes
    to the worker's own host queue (``host.alpha`` for ``worker@alpha``, the prefork
    worker; ``host.alpha.io`` for ``io@alpha``, the threads one) with an expiry, and
    must come back from that worker in time. A worker whose every pool slot is busy cannot
    run it; it still counts as live when it answers a control ping and reports
    all slots taken (``--strict`` turns that allowance off). Exit 0 live, 1 not.

``python -m celeryapp.monitoring.health flower [--url URL] [--pid PID] [--wait S]``
    Flower is ready: ``/healthcheck`` answers *and* its event receiver has
    subscribed on the broker (its Redis connections are named
    ``turbo-flower-<pid>``). Flower answers HTTP a moment before it listens, and
    task events sent in between never reach it. Without ``--pid`` it looks for
    the Flower process on this host. ``--wait S`` retries for up to S seconds
    (systemd's ExecStartPost). Exit 0 ready, 1 not.

``python -m celeryapp.monitoring.health stale [--older-than S] [--json]``
    Stale tasks: result metas saying STARTED whose worker (stored by
    ``result_extended``) no longer answers a ping, found by SCANning
    ``celery-task-meta-*`` in the result backend. Such a task died with its
    worker; its message comes back after the visibility timeout. Exit 1 when any.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from celeryapp.config import get_settings
from celeryapp.core.names import HEALTH_REPLY_KEY as REPLY_KEY
from celeryapp.core.names import PING_TASK, host_queue, node_role, worker_node
from celeryapp.core.text import as_text
from celeryapp.monitoring.flower import client_name, events_subscribed

PING_PRIORITY = 0  # critical: ahead of any work waiting in the host queue
SCAN_BATCH = 1000


@dataclass
class Outcome:
    ok: bool
    message: str


def worker_name(worker: str) -> tuple[str, str]:
    """``worker@alpha`` or ``alpha`` -> (``worker@alpha``, ``alpha``); ``io@alpha`` ->
    (``io@alpha``, ``alpha``)."""
    if "@" in worker:
        return worker, worker.split("@", 1)[1]
    return worker_node(worker), worker


def own_queue(worker: str) -> str:
    """The host queue only ``worker`` consumes: ``host.alpha`` for ``worker@alpha``,
    ``host.alpha.io`` for ``io@alpha``."""
    role, host = node_role(worker_name(worker)[0])
    return host_queue(host, role)


# --- live -----------------------------------------------------------------------------
def check_live(app, worker: str, timeout: float = 30.0, strict: bool = False) -> Outcome:
    name, _ = worker_name(worker)
    queue = own_queue(name)
    started = time.monotonic()
    reserve = 0.0 if strict else min(5.0, timeout / 4)  # left for the busy check
    task_id = str(uuid.uuid4())
    key = REPLY_KEY.format(id=task_id)
    try:
        client = app.backend.client
        app.send_task(PING_TASK, kwargs={"sent": time.time()}, task_id=task_id,
                      queue=queue, priority=PING_PRIORITY, expires=timeout)
        raw = _wait_for(client, key, started + max(0.5, timeout - reserve))
    except Exception as exc:  # noqa: BLE001 - broker unreachable, bad credentials
        return Outcome(False, f"{name}: health ping failed: {type(exc).__name__}: {exc}")
    finally:
        _delete(app, key)
    if raw is None:
        if strict:
            return Outcome(False, f"{name}: health ping not run within {timeout:g}s "
                                  f"(queue {queue})")
        left = max(1.0, timeout - (time.monotonic() - started))
        return _busy_or_dead(app, name, queue, timeout, left)
    reply = json.loads(raw)
    if reply.get("worker") != name:
        return Outcome(False, f"{name}: health ping for {queue} ran on "
                              f"{reply.get('worker')} instead")
    return Outcome(True, f"{name} live: ping ran in pool pid {reply.get('pid')} "
                         f"after {time.monotonic() - started:.2f}s")


def _wait_for(client, key: str, deadline: float) -> bytes | None:
    delay = 0.02
    while True:
        raw = client.get(key)
        if raw is not None or time.monotonic() >= deadline:
            return raw
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


def _delete(app, key: str) -> None:
    try:
        app.backend.client.delete(key)
    except Exception:  # noqa: BLE001 - best effort: the key expires anyway
        pass


def _busy_or_dead(app, name: str, queue: str, timeout: float, left: float) -> Outcome:
    """The ping did not run: live only if the worker answers and every slot is taken."""
    try:
        inspector = app.control.inspect(destination=[name], timeout=min(left, 3.0))
        stats = (inspector.stats() or {}).get(name)
        active = (inspector.active() or {}).get(name) if stats is not None else None
    except Exception as exc:  # noqa: BLE001 - reported in the outcome
        return Outcome(False, f"{name}: health ping not run within {timeout:g}s and the "
                              f"worker cannot be asked: {type(exc).__name__}: {exc}")
    if stats is None or active is None:
        return Outcome(False, f"{name}: health ping not run within {timeout:g}s and the "
                              f"worker does not answer (stopped, hung, or not consuming "
                              f"{queue})")
    slots = int((stats.get("pool") or {}).get("max-concurrency") or 0)
    if slots and len(active) >= slots:
        return Outcome(True, f"{name} live but busy: all {slots} pool slots running tasks; "
                             f"the health ping waits in {queue}")
    return Outcome(False, f"{name}: answers control commands, {len(active)}/{slots or '?'} "
                          f"slots busy, yet did not run the health ping within {timeout:g}s "
                          f"(is it consuming {queue}?)")


# --- stale ----------------------------------------------------------------------------
@dataclass
class StaleTask:
    task_id: str
    name: str | None
    worker: str | None
    started_ago_s: float | None


def started_tasks(app, older_than: float = 0.0) -> list[StaleTask]:
    """Every task whose stored state is STARTED (and was written ``older_than`` ago)."""
    backend = app.backend
    client = backend.client
    prefix = backend.task_keyprefix
    prefix = as_text(prefix)
    expires = _seconds(app.conf.result_expires)
    found: list[StaleTask] = []
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}*", count=SCAN_BATCH)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = pipe.execute()
            for key, raw, ttl in zip(keys, replies[0::2], replies[1::2], strict=True):
                task = _started(key, raw, ttl, prefix, expires)
                if task and (task.started_ago_s is None or task.started_ago_s >= older_than):
                    found.append(task)
        if not cursor:
            return found


def _started(key, raw, ttl, prefix: str, expires: float | None) -> StaleTask | None:
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("status") != "STARTED":
        return None
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    key = as_text(key)
    # the key was (re)written with the STARTED state and a TTL of result_expires
    age = round(expires - ttl / 1000, 1) if expires and ttl and ttl > 0 else None
    return StaleTask(task_id=meta.get("task_id") or key[len(prefix):], name=meta.get("name"),
                     worker=meta.get("worker") or result.get("hostname"), started_ago_s=age)


def _seconds(value) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def find_stale(app, older_than: float = 0.0, ping_timeout: float = 2.0) -> list[StaleTask]:
    """STARTED tasks whose worker does not answer a ping (asked twice)."""
    candidates = started_tasks(app, older_than)
    workers = {task.worker for task in candidates if task.worker}
    silent = set(workers)
    for _ in range(2):
        if not silent:
            break
        replies = app.control.ping(destination=sorted(silent), timeout=ping_timeout) or []
        for reply in replies:
            silent -= set(reply)
    return [task for task in candidates if task.worker is None or task.worker in silent]


# --- flower ---------------------------------------------------------------------------
def flower_url() -> str:
    """Flower's /healthcheck from the settings (a wildcard address asked on loopback)."""
    settings = get_settings()
    address = settings.flower_address
    if address in ("0.0.0.0", "::", ""):
        address = "127.0.0.1"
    if ":" in address:
        address = f"[{address}]"
    return f"http://{address}:{settings.flower_port}/healthcheck"


def _is_flower(argv: list[str]) -> bool:
    """``celery ... flower`` (also as ``python -m celery``), or our launcher before it execs."""
    if "celeryapp.monitoring.flower" in argv:
        return True
    celery = Path(argv[0]).name == "celery" or any(
        flag == "-m" and module == "celery" for flag, module in zip(argv, argv[1:], strict=False))
    return celery and "flower" in argv


def local_flower_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if argv and argv[0] and _is_flower(argv):
            pids.append(int(entry.name))
    return sorted(pids)


def check_flower(app, url: str, pid: int | None = None) -> Outcome:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            if reply.status != 200:
                return Outcome(False, f"Flower at {url} answered HTTP {reply.status}")
    except OSError as exc:
        return Outcome(False, f"Flower does not answer at {url}: {exc}")
    pids = [pid] if pid is not None else local_flower_pids()
    if not pids:
        return Outcome(False, f"Flower answers at {url}, but no Flower process runs on "
                              f"this host to check its events (give --pid)")
    try:
        listening = [p for p in pids if events_subscribed(app, p)]
    except Exception as exc:  # noqa: BLE001 - broker unreachable, bad credentials
        return Outcome(False, f"could not ask the broker whether Flower listens: "
                              f"{type(exc).__name__}: {exc}")
    if not listening:
        names = ", ".join(client_name(p) for p in pids)
        return Outcome(False, f"Flower answers at {url} but has not subscribed to the task "
                              f"events yet (no subscribed {names} on the broker)")
    return Outcome(True, f"Flower at {url} answers and receives task events "
                         f"(pid {', '.join(map(str, listening))})")


def wait_flower(app, url: str, pid: int | None, wait: float) -> Outcome:
    deadline = time.monotonic() + wait
    while True:
        outcome = check_flower(app, url, pid)
        if outcome.ok or time.monotonic() >= deadline:
            return outcome
        time.sleep(0.5)


# --- CLI ------------------------------------------------------------------------------
def main(argv: list[str] | None = None, app=None) -> int:
    """``python -m celeryapp.monitoring.health``; ``app``: the Celery app to check with
    (default: the project's, built from the environment)."""
    parser = argparse.ArgumentParser(prog="python -m celeryapp.monitoring.health",
                                     description="Agent Turbo health checks")
    sub = parser.add_subparsers(dest="check", required=True)
    live = sub.add_parser("live", help="prove a worker consumes from its host queue")
    live.add_argument("--worker", required=True,
                      help="worker@<host> (or just <host>), or io@<host> (the threads worker)")
    live.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    live.add_argument("--strict", action="store_true",
                      help="fail when the ping cannot run, even if every slot is busy")
    live.add_argument("--attempts", type=int, default=1,
                      help="live if any of N attempts succeeds (rides out a broker blip)")
    flower = sub.add_parser("flower", help="Flower answers and receives task events")
    flower.add_argument("--url", help="Flower's /healthcheck (default: from TURBO_FLOWER_ADDRESS"
                                      " and TURBO_FLOWER_PORT)")
    flower.add_argument("--pid", type=int, help="Flower's process (default: found on this host)")
    flower.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="retry for up to S seconds (default: one check)")
    stale = sub.add_parser("stale", help="STARTED tasks whose worker is gone")
    stale.add_argument("--older-than", type=float, default=0.0, metavar="S",
                       help="only tasks STARTED at least S seconds ago (default 0)")
    stale.add_argument("--ping-timeout", type=float, default=2.0)
    stale.add_argument("--json", action="store_true", help="print a JSON list")
    args = parser.parse_args(argv)

    budget = 300.0
    if args.check == "live":
        budget = (args.timeout + 15) * max(1, args.attempts)
    elif args.check == "flower":
        budget = args.wait + 30
    signal.signal(signal.SIGALRM, _overtime)
    signal.alarm(int(budget))  # a hung broker connection must not hang systemd/compose

    if app is None:
        from celeryapp.factory import app

    if args.check == "flower":
        outcome = wait_flower(app, args.url or flower_url(), args.pid, args.wait)
        print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
        return 0 if outcome.ok else 1

    if args.check == "live":
        for attempt in range(max(1, args.attempts)):
            if attempt:
                time.sleep(min(5.0, args.timeout / 4))
            outcome = check_live(app, args.worker, args.timeout, args.strict)
            print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
            if outcome.ok:
                return 0
        return 1

    try:
        tasks = find_stale(app, args.older_than, args.ping_timeout)
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        print(f"stale check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(task) for task in tasks]))
    else:
        for task in tasks:
            age = "?" if task.started_ago_s is None else f"{task.started_ago_s:.0f}s"
            print(f"{task.task_id} {task.name or '?'} STARTED on {task.worker or '?'} "
                  f"(not answering) {age} ago")
        print(f"{len(tasks)} stale task(s)" if tasks else "no stale tasks")
    return 1 if tasks else 0


def _overtime(signum, frame):
    print("health check did not finish in time (broker unreachable?)", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
