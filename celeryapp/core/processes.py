"""Processes: stopping one started in a session of its own with everything it started, and
who is whose child (Linux ``/proc``)."""
from __future__ import annotations

import os
import signal
import subprocess


def term_leader_then_kill_group(process: subprocess.Popen | None, timeout: float) -> None:
    """TERM the leader of a process started with ``start_new_session`` (a worker's or
    Flower's warm shutdown), wait up to ``timeout``, then KILL its whole group.
    (:func:`tasks.agents.supervisor.term_group_then_kill` TERMs the whole group.)"""
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


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    return raw.rsplit(")", 1)[1].split()


def parent_pid(pid: int) -> int | None:
    fields = _stat(pid)
    if not fields or fields[0] == "Z":  # gone, or a zombie: not running anything
        return None if fields is None else -1
    return int(fields[1])


def children(pid: int) -> list[int]:
    """Live child pids of ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if name.isdigit():
            fields = _stat(int(name))
            if fields and fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(name))
    return sorted(found)
