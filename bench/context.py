"""What every benchmark shares: one private Redis, both apps, workers, waiting for results.

One ``LocalRedis`` (with a password) serves both sides: the plain app on
database 0, this project on database 1 (same server, separate key spaces, so a
FLUSHDB between benchmarks never touches the other side). Workers are started
per benchmark with :meth:`BenchContext.worker` and always stopped, whatever
happens; the database is flushed before each worker starts, so nothing a
previous benchmark left in a queue is run by the next.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from celeryapp.dev.localredis import LocalRedis
from celeryapp.dev.localworker import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("plain", "turbo")
LABELS = {"plain": "plain Celery", "turbo": "Agent Turbo"}
META_PREFIX = "celery-task-meta-"
READY = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class PlainWorker(WorkerProcess):
    """``celery -A bench.plain_app worker``: default queue, default everything."""

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "celery", "-A", "bench.plain_app", "worker",
               "-n", self.name, "-c", str(self.concurrency), "-P", self.pool, "-l", "INFO",
               "--without-gossip", "--without-mingle", *self.extra_args]
        if self.logfile:
            cmd += ["--logfile", str(self.logfile)]
        return cmd


@dataclass
class VariantWorker(WorkerProcess):
    """The project's worker on ``bench.turbo_variant`` (costs switched off, BENCH_TURBO_OFF)."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("-A") + 1] = "bench.turbo_variant"
        return cmd


@dataclass
class BenchContext:
    workdir: Path
    redis: LocalRedis
    quick: bool = False
    profile: bool = False
    ablate: bool = False
    out_dir: Path = ROOT / "var" / "bench"
    profiles: dict = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)
    _clients: dict = field(default_factory=dict)
    _started: int = 0

    # --- set-up ---------------------------------------------------------------
    @classmethod
    @contextmanager
    def open(cls, quick: bool = False, profile: bool = False,
             out_dir: Path | None = None) -> Iterator[BenchContext]:
        workdir = Path(tempfile.mkdtemp(prefix="turbo-bench-"))
        redis = LocalRedis(workdir=workdir / "redis", password=secrets.token_hex(12))
        ctx = cls(workdir=workdir, redis=redis, quick=quick, profile=profile)
        if out_dir is not None:
            ctx.out_dir = out_dir
        try:
            redis.start()
            ctx._configure_env()
            yield ctx
        finally:
            ctx.stop_workers()
            for client in ctx._clients.values():
                client.close()
            redis.stop()
            if not os.environ.get("BENCH_KEEP_DIR"):
                shutil.rmtree(workdir, ignore_errors=True)

    @property
    def plain_url(self) -> str:
        return f"{self.redis.url}/0"

    @property
    def turbo_url(self) -> str:
        return f"{self.redis.url}/1"

    @property
    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _configure_env(self) -> None:
        """Both apps read their URLs from the environment when first imported."""
        os.environ.update({
            "BENCH_PLAIN_URL": self.plain_url,
            "TURBO_BROKER_URL": self.turbo_url,
            "TURBO_RESULT_BACKEND": self.turbo_url,
            "TURBO_RESULTS_DIR": str(self.workdir / "results"),
            "TURBO_AGENT_SLOTS_DIR": str(self.workdir / "agent-slots"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])),
        })
        os.environ.pop("TURBO_REDIS_PASSWORD", None)
        if "celeryapp.factory" in sys.modules:
            raise RuntimeError("celeryapp.app was built before the bench configured Redis")
        from celeryapp.config import reset_settings

        reset_settings()

    # --- the two apps ------------------------------------------------------------
    def app(self, side: str):
        if side == "plain":
            from bench import plain_app

            return plain_app.app
        from bench import turbo_tasks

        return turbo_tasks.app

    def task(self, side: str, name: str):
        """A bench task (``noop``, ``sleep``, ...) of one side."""
        if side == "plain":
            from bench import plain_app as module
        else:
            from bench import turbo_tasks as module
        return getattr(module, name)

    def client(self, side: str):
        """A redis-py client on that side's database (for polling results)."""
        if side not in self._clients:
            import redis

            self._clients[side] = redis.Redis.from_url(
                self.plain_url if side == "plain" else self.turbo_url)
        return self._clients[side]

    def flush(self, side: str) -> None:
        if any(w.process and w.process.poll() is None for w in self.workers):
            raise RuntimeError("flush() while a worker runs would delete its queue bindings")
        self.client(side).flushdb()

    # --- workers --------------------------------------------------------------------
    @contextmanager
    def worker(self, side: str, concurrency: int, flush: bool = True,
               off: tuple[str, ...] = (), pool: str = "prefork") -> Iterator[WorkerProcess]:
        """A running worker of ``side`` with ``-c concurrency``; stopped on exit.

        ``off`` (turbo only): costs to switch off, see bench/turbo_variant.py.
        """
        if flush:
            self.flush(side)
        self._started += 1
        name = f"{side}{self._started}@bench"
        logfile = self.logs / f"{side}{self._started}-c{concurrency}.log"
        if side == "plain":
            worker: WorkerProcess = PlainWorker(name=name, concurrency=concurrency,
                                                logfile=logfile, pool=pool)
        else:
            from bench.turbo_tasks import QUEUE

            cls = VariantWorker if off else WorkerProcess
            worker = cls(name=name, queues=QUEUE, concurrency=concurrency, logfile=logfile,
                         pool=pool,
                         extra_args=("-I", "bench.turbo_tasks"),
                         env={"BENCH_TURBO_OFF": ",".join(off)} if off else {})
        self.workers.append(worker)
        try:
            worker.start(self.app(side), timeout=180)
            if pool == "prefork":
                self.wait_children(worker, concurrency)
            yield worker
        finally:
            worker.stop()
            self.workers.remove(worker)

    def wait_children(self, worker: WorkerProcess, count: int, timeout: float = 120) -> list[int]:
        """Wait until the prefork pool has ``count`` processes; return their pids."""
        import psutil

        deadline = time.monotonic() + timeout
        while True:
            children = psutil.Process(worker.pid).children()
            if len(children) >= count:
                return [child.pid for child in children]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{worker.name}: {len(children)}/{count} pool processes")
            time.sleep(0.1)

    def stop_workers(self) -> None:
        for worker in list(self.workers):
            try:
                worker.stop()
            finally:
                self.workers.remove(worker)

    # --- results ------------------------------------------------------------------------
    def wait_results(self, side: str, ids: list[str], timeout: float = 600,
                     interval: float = 0.05) -> float:
        """Wait until every task in ``ids`` stored a final state; return the last ``date_done``.

        Polls the result keys directly (MGET, in submit order), so the waiting
        costs the workers nothing; ``date_done`` is stamped by the worker as it
        stores the result, so the time returned does not depend on the polling.
        """
        client = self.client(side)
        pending = [META_PREFIX + task_id for task_id in ids]
        deadline = time.monotonic() + timeout
        last_done = 0.0
        while pending:
            chunk = pending[:500]
            done = 0
            for key, raw in zip(chunk, client.mget(chunk), strict=True):
                meta = json.loads(raw) if raw else None
                if not meta or meta.get("status") not in READY:
                    break
                if meta["status"] != "SUCCESS":
                    raise RuntimeError(f"{side} task {key[len(META_PREFIX):]} ended "
                                       f"{meta['status']}: {meta.get('result')}")
                last_done = max(last_done, date_done(meta))
                done += 1
            pending = pending[done:]
            if done == len(chunk):
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side}: {len(pending)} of {len(ids)} results missing "
                                   f"after {timeout}s")
            time.sleep(interval)
        return last_done

    def say(self, text: str) -> None:
        print(f"  {text}", flush=True)


def date_done(meta: dict) -> float:
    """The worker's store time of a result, as a POSIX timestamp."""
    value = meta.get("date_done")
    if not value:
        return time.time()
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def percentiles(samples: list[float], scale: float = 1.0) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "min": ordered[0] * scale, "max": ordered[-1] * scale, "n": len(ordered)}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
