"""Start and stop real ``celery worker`` processes (demo, tests, benchmarks).

Each worker runs in its own session so that stopping it also reaches any
agent process group a task left behind. By default one worker consumes every
shared queue (what a host's two workers share in production, see
``celeryapp.worker.host``); ``pool="threads"`` with a larger ``concurrency`` makes
it the io worker's kind (the demo starts one of each per host).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from celeryapp.core.names import QUEUES
from celeryapp.core.processes import term_leader_then_kill_group


@dataclass
class WorkerProcess:
    name: str  # e.g. worker@alpha, io@alpha
    queues: str = ",".join(QUEUES)  # queries, agents, default, warehouse
    concurrency: int = 2  # prefork processes, or threads with pool="threads"
    env: dict[str, str] = field(default_factory=dict)
    logfile: Path | None = None
    pool: str = "prefork"
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "celery", "-A", "celeryapp", "worker",
               "-n", self.name, "-Q", self.queues, "-c", str(self.concurrency),
               "-P", self.pool, "-l", "INFO", "--without-gossip", "--without-mingle",
               *self.extra_args]
        if self.logfile:
            cmd += ["--logfile", str(self.logfile)]
        return cmd

    def start(self, app=None, timeout: float = 60.0) -> WorkerProcess:
        env = {**os.environ, **self.env}
        out = open(self.logfile.with_suffix(".out"), "ab") if self.logfile else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if app is not None:
            self.wait_ready(app, timeout)
        return self

    def wait_ready(self, app, timeout: float = 60.0) -> None:
        """Ready means it answers a broadcast ping, i.e. it consumes from Redis."""
        deadline = time.monotonic() + timeout
        errors = app.connection_for_write().connection_errors
        own = None  # a connection of its own once the pooled one failed
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                replies = app.control.ping(destination=[self.name], timeout=0.5,
                                           connection=own)
            except errors:
                # a pooled connection from before a Redis restart (Celery's broadcast
                # does not retry it): ask again on a new one
                if own is not None:
                    own.release()
                own = app.connection_for_write()
                time.sleep(0.1)
                continue
            if any(self.name in reply for reply in replies):
                if own is not None:
                    own.release()
                return
        raise TimeoutError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        if not self.logfile:
            return ""
        text = ""
        for path in (self.logfile, self.logfile.with_suffix(".out")):
            if path.exists():
                text += path.read_text(errors="replace")[-size:]
        return text

    def log(self) -> str:
        if self.logfile and self.logfile.exists():
            return self.logfile.read_text(errors="replace")
        return ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (TERM), then KILL the whole process group if it lingers."""
        term_leader_then_kill_group(self.process, timeout)
