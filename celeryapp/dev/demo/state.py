"""What ``make demo`` started, recorded in ``state.json``, and stopping it again.

Every process is recorded the moment it starts, by its pid and the time the
kernel says it started, so that ``make demo-down`` stops a killed demo's
leftovers and nothing else: a pid reused by another program has another start
time. The start time, unlike the command line, is the same before and after an
``exec`` (Flower's launcher replaces itself with ``celery ... flower``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class StateFile:
    """``state.json``: the demo's pid and every process it started.

    Each process is kept with its pid, its start time and the argv the demo
    launched it with (how a worker's pool processes are known once the worker
    itself is gone); ``--down`` signals nothing that does not match them.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"

    def load(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"processes": []}  # a torn write: nothing we can trust

    def begin(self, **info: Any) -> None:
        pid = os.getpid()
        self._save({"demo_pid": pid, "demo_start_time": start_time(pid),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "processes": [], **info})

    def track(self, name: str, pid: int, argv: list[str]) -> None:
        """Record a child just started: not reaped yet, so ``pid`` is surely still it."""
        data = self.load() or {"processes": []}
        data["processes"].append({"name": name, "pid": pid, "start_time": start_time(pid),
                                  "argv": [str(arg) for arg in argv]})
        self._save(data)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.directory / "redis", ignore_errors=True)  # its config holds a password

    def _save(self, data: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.part")
        partial.write_text(json.dumps(data, indent=2))
        os.replace(partial, self.path)


def _state_and_start(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid``, None when there is no such process.

    Linux: /proc/PID/stat fields 3 and 22 (start time in clock ticks after boot);
    elsewhere ``ps`` (start time to the second).
    """
    if Path("/proc/self").exists():
        try:
            stat = _proc_stat(pid)
            return stat[0], stat[19]
        except (OSError, IndexError):
            return None
    found = subprocess.run(["ps", "-o", "stat=", "-o", "lstart=", "-p", str(pid)],
                           capture_output=True, text=True).stdout.split(None, 1)
    return (found[0], found[1].strip()) if len(found) == 2 else None


def start_time(pid: int) -> str | None:
    """When ``pid`` started, as the kernel tells it (None when there is no such process)."""
    found = _state_and_start(pid)
    return found[1] if found else None


def is_running(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (and no zombie)."""
    found = _state_and_start(pid)
    return bool(found) and started is not None and found[1] == started \
        and not found[0].startswith("Z")


def argv_of(pid: int) -> list[str] | None:
    """The command line of ``pid`` (Linux; None elsewhere or when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    if not Path("/proc/self").exists():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = _proc_stat(int(entry))
            except (OSError, IndexError):
                continue
            if stat[0] != "Z" and int(stat[2]) == pgid:
                members.append(int(entry))
    return members


def is_ours(record: dict) -> bool:
    """Whether the record's process group still holds a process the demo started.

    Every process the demo starts leads a group of its own (pgid = its pid). Ours
    is the leader with the recorded start time; with the leader gone (a worker
    killed on its own), a member running the exact argv the demo launched (a
    worker's pool processes are forks of it). A pid that has another start time
    belongs to another program, and then so does its group: the kernel does not
    hand out a pid while a group of that number still exists.
    """
    pid, started = record["pid"], record.get("start_time")
    if started is None:  # recorded by an older demo, or gone before it was recorded
        return False
    found = _state_and_start(pid)
    if found and found[1] != started:
        return False
    if found and not found[0].startswith("Z"):
        return True
    return any(argv_of(member) == record.get("argv") for member in group_members(pid))


def running_demo(data: dict) -> int | None:
    """The pid of the demo that wrote ``data``, if it still runs and is not this process."""
    pid = data.get("demo_pid")
    if pid and pid != os.getpid() and is_running(pid, data.get("demo_start_time")):
        return pid
    return None


def term_group_until_empty(pgid: int, timeout: float = 15.0) -> str:
    """TERM the process group (of a recorded process: not our child), wait until no member
    is left, else KILL; say which it took."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return "stopped"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_members(pgid):
                return "stopped (TERM)" if sig == signal.SIGTERM else "killed (KILL)"
            time.sleep(0.1)
    return "still running after KILL"


def stop_recorded(state: StateFile, *, quiet: bool = False) -> list[str]:
    """Stop every recorded process that still runs (newest first); return what was done."""
    data = state.load()
    if not data:
        return []
    done = []
    demo_pid = running_demo(data)
    if demo_pid:
        os.kill(demo_pid, signal.SIGTERM)  # it stops its own children first
        deadline = time.monotonic() + 40
        while is_running(demo_pid, data["demo_start_time"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        done.append(f"demo process (pid {demo_pid}): asked to stop (TERM)")
    for record in reversed(data.get("processes", [])):
        label = f"{record['name']} (pid {record['pid']})"
        if is_ours(record):
            done.append(f"{label}: {term_group_until_empty(record['pid'])}")
        elif not quiet:
            done.append(f"{label}: not running")
    return done
