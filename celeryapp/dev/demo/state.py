"""What ``make demo`` started, recorded in ``state.json``, and stopping it again.

Every process is recorded the moment it starts, with markers from its command
line, so that ``make demo-down`` stops a killed demo's leftovers and nothing
else (a pid that was reused by another program does not match the markers).
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
    """``state.json``: the demo's pid and every process it started, with markers.

    A marker is text the process's command line must contain before ``--down``
    signals it, so a pid reused by an unrelated process is never touched.
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
        self._save({"demo_pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "processes": [], **info})

    def track(self, name: str, pid: int, markers: list[str]) -> None:
        data = self.load() or {"processes": []}
        data["processes"].append({"name": name, "pid": pid, "markers": markers})
        self._save(data)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.directory / "redis", ignore_errors=True)  # its config holds a password

    def _save(self, data: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.part")
        partial.write_text(json.dumps(data, indent=2))
        os.replace(partial, self.path)


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (None when it is gone or a zombie)."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            if _proc_stat(pid)[0] == "Z":
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return None
    found = subprocess.run(["ps", "-o", "command=", "-p", str(pid)],
                           capture_output=True, text=True)
    return found.stdout.strip() or None


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
    """Whether any live member of the record's process group still matches its markers."""
    for pid in group_members(record["pid"]):
        line = cmdline(pid) or ""
        if all(marker in line for marker in record["markers"]):
            return True
    return False


def stop_group(pgid: int, timeout: float = 15.0) -> str:
    """TERM the process group, wait, KILL what is left; say which it took."""
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
    demo_pid = data.get("demo_pid")
    if demo_pid and demo_pid != os.getpid() and "celeryapp.dev.demo" in (cmdline(demo_pid) or ""):
        os.kill(demo_pid, signal.SIGTERM)  # it stops its own children first
        deadline = time.monotonic() + 40
        while cmdline(demo_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        done.append(f"demo process (pid {demo_pid}): asked to stop (TERM)")
    for record in reversed(data.get("processes", [])):
        label = f"{record['name']} (pid {record['pid']})"
        if is_ours(record):
            done.append(f"{label}: {stop_group(record['pid'])}")
        elif not quiet:
            done.append(f"{label}: not running")
    return done
