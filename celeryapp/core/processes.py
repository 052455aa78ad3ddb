"""Stopping a process started in a session of its own, with everything it started."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(process: subprocess.Popen | None, timeout: float) -> None:
    """TERM a process started with ``start_new_session``, wait, then KILL its group."""
    if not process:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(5)
