"""Start Flower for the demo and the tests, through the project's launcher
(``python -m celeryapp.monitoring.flower``) or the plain ``celery -A celeryapp flower``,
and know when it is ready: its /healthcheck answers and its event receiver listens."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeryapp.core.processes import term_leader_then_kill_group
from celeryapp.monitoring.flower import events_subscribed


def _project_app():
    from celeryapp import app

    return app


@dataclass
class FlowerProcess:
    """Flower started through the launcher; the login goes through the environment."""

    port: int
    user: str | None = None
    password: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    logfile: Path | None = None
    extra_args: tuple[str, ...] = ()
    launcher: bool = True  # False: plain `celery -A celeryapp flower` (same config file)
    app: Any = None  # whose broker it listens on (default: celeryapp.app)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Ours plus ``env``; inherited FLOWER_* / TURBO_FLOWER_* variables are dropped."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("FLOWER_", "TURBO_FLOWER_"))}
        env.update(self.env)
        env["TURBO_FLOWER_PORT"] = str(self.port)
        if self.user is not None:
            env.update(TURBO_FLOWER_USER=self.user, TURBO_FLOWER_PASSWORD=self.password or "")
        return env

    def command(self) -> list[str]:
        if self.launcher:
            return [sys.executable, "-m", "celeryapp.monitoring.flower", *self.extra_args]
        return [sys.executable, "-m", "celery", "-A", "celeryapp", "flower", *self.extra_args]

    def start(self, timeout: float = 60.0) -> FlowerProcess:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> FlowerProcess:
        """Start it without waiting (``wait_ready`` later): other work can go on meanwhile."""
        out = open(self.logfile, "ab") if self.logfile else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if self.logfile:
                out.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when /healthcheck (never behind the login) answers and the event
        receiver listens: Flower answers HTTP before that, and events sent in between
        would never reach it."""
        deadline = time.monotonic() + timeout
        self._wait_healthy(deadline, timeout)
        app = self.app if self.app is not None else _project_app()
        while not events_subscribed(app, self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"Flower did not listen for events in {timeout:.0f}s: "
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def _wait_healthy(self, deadline: float, timeout: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Flower exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Flower did not answer on {self.url} in {timeout:.0f}s: "
                           f"{self.log_tail()}")

    def auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def get(self, path: str, auth: bool = True, timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of a GET; HTTP errors are returned, not raised."""
        headers = self.auth_header() if auth and self.user else {}
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_tail(self, size: int = 3000) -> str:
        if self.logfile and self.logfile.exists():
            return self.logfile.read_text(errors="replace")[-size:]
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        """TERM (Flower saves its state on a clean stop), then KILL the group."""
        term_leader_then_kill_group(self.process, timeout)
