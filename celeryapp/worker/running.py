"""What each worker process is running right now: one small JSON file per task.

Tasks run in prefork children while inspect/control commands run in the
worker's main process, so the two share a directory instead of memory::

    <tempdir>/agent-turbo/running/<worker-name>.<main-pid>/<task_id>.json

(the main pid keeps apart two workers of the same name on one machine, e.g. a
demo and a test run).
A child writes its file atomically when a query or agent run starts
(:func:`register`, called from the ``task_prerun`` hook in
:mod:`celeryapp.worker.control`), adds what it learns later (:func:`note`: the engine's
statement id, the agent CLI's pid) and removes it when the task ends
(:func:`unregister`). A child that died without cleaning up leaves a file whose
pid is gone or no longer a child of the worker: readers skip it and delete it.

A worker whose pool runs tasks in its own process (threads) keeps the entries in
memory instead (:func:`keep_in_memory`): its inspect commands run in the same
process, and a file write per task start is a cost a hundred threads pay in turn.

Each entry also has a stop event (:func:`stop_event`): on an in-process pool
(threads) a revoke with ``terminate=True`` cannot signal a thread, so the worker
sets the task's event (:func:`cancel`, from the hooks in
:mod:`celeryapp.worker.control`) and the runners, which wait on it, stop the work at
the source. On prefork the event exists but is never set: signals do that job.

Standard library only and no Celery: the runners may call :func:`note`
(a no-op outside a registered task).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celeryapp.core.processes import children, parent_pid  # noqa: F401 (re-exported)
from celeryapp.core.redaction import (
    redact_text,  # inspect replies mask secrets like Flower does
)

PREVIEW_CHARS = 200
STATEMENT_POLL_S = 0.5

_local = threading.local()  # .task_id: the task this thread runs (prefork: the process)
_lock = threading.Lock()
_entries: dict[str, tuple[Path, dict[str, Any]]] = {}  # task_id -> (file, entry)
_main_pid: int | None = None  # the worker's main process, when this is a pool child
_stops: dict[str, threading.Event] = {}  # task_id -> set when the task must stop
_early: OrderedDict[str, None] = OrderedDict()  # cancelled before they registered
EARLY_KEEP = 1000
_in_memory = False  # threads pool: entries are not written to files (keep_in_memory)
_swept: tuple[int, Path] | None = None  # (pid, folder) whose stale files this process swept


def base_dir() -> Path:
    return Path(tempfile.gettempdir()) / "agent-turbo" / "running"


def worker_dir(worker: str, main: int | None = None) -> Path:
    """The directory of one worker process (``worker@alpha`` with main pid ``main``)."""
    return base_dir() / f"{_safe(worker)}.{main_pid() if main is None else main}"


def _safe(worker: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", worker)


def set_main_pid(pid: int) -> None:
    """Called in each prefork child (``worker_process_init``) with its parent's pid."""
    global _main_pid
    _main_pid = pid


def main_pid() -> int:
    return _main_pid or os.getpid()  # threads/solo pools run tasks in the main process


def keep_in_memory(on: bool = True) -> None:
    """In a worker whose tasks run in its own process (threads pool): no files, the
    readers (:func:`entries` in this process) see the entries in memory."""
    global _in_memory
    _in_memory = on


def preview(text: Any, limit: int = PREVIEW_CHARS) -> str | None:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    if text is None:
        return None
    flat = " ".join(redact_text(str(text)).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "\u2026"


# --- writer side: the process running the task --------------------------------------
def register(kind: str, task_id: str, *, worker: str, **info: Any) -> Path:
    """Record that this process (this thread) now runs ``task_id``; return its file
    (None when the entries are kept in memory)."""
    pid = os.getpid()
    entry = {"kind": kind, "task_id": task_id, "worker": worker, "worker_pid": pid,
             "started": time.time(), **info}
    path = None
    if not _in_memory:
        folder = worker_dir(worker)
        path = folder / f"{task_id}.json"
    with _lock:
        if path is not None:
            _first_in(folder, pid)
        _entries[task_id] = (path, entry)
        stop = _stops[task_id] = threading.Event()
        if task_id in _early:  # cancelled between accept and start
            del _early[task_id]
            stop.set()
        if path is not None:
            _write(path, entry)
    _local.task_id = task_id
    return path


def _first_in(folder: Path, pid: int) -> None:
    """Once per process and folder: make the folder, and drop the files an earlier
    process with this pid left (pid reuse after a crash: stale by definition). Later
    files of this process are removed by :func:`unregister`."""
    global _swept
    if _swept == (pid, folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    for other in folder.glob("*.json"):
        if _read(other).get("worker_pid") == pid:
            _unlink(other)
    _swept = (pid, folder)


def note(task_id: str | None = None, **fields: Any) -> None:
    """Add ``fields`` to the entry of ``task_id`` (default: this thread's task)."""
    task_id = task_id or getattr(_local, "task_id", None)
    if not task_id:
        return
    with _lock:
        found = _entries.get(task_id)
        if found is None:
            return
        path, entry = found
        entry.update(fields)
        if path is not None:
            _write(path, entry)


def unregister(task_id: str) -> None:
    with _lock:
        found = _entries.pop(task_id, None)
        _stops.pop(task_id, None)
    if found is not None and found[0] is not None:
        _unlink(found[0])
    if getattr(_local, "task_id", None) == task_id:
        _local.task_id = None


def current_task_id() -> str | None:
    return getattr(_local, "task_id", None)


def stop_event(task_id: str | None = None) -> threading.Event | None:
    """The stop event of ``task_id`` (default: this thread's task), None outside one.

    Runners wait on it (``tasks.deadline.run_with_deadline(stop=...)``, the agent
    runner's wait loop) and cancel at the source once it is set."""
    task_id = task_id or getattr(_local, "task_id", None)
    if not task_id:
        return None
    with _lock:
        return _stops.get(task_id)


def cancel(task_id: str, *, early: bool = True) -> bool:
    """Ask the task ``task_id`` running in this process to stop; True if it runs here.

    With ``early``, a task that has not registered yet (accepted, ``task_prerun`` still
    to come) starts with its event set: a revoke never falls into that gap."""
    with _lock:
        stop = _stops.get(task_id)
        if stop is None:
            if early:
                _early[task_id] = None
                while len(_early) > EARLY_KEEP:
                    _early.popitem(last=False)
            return False
    stop.set()
    return True


def on_session(session) -> None:
    """``on_start`` hook for :func:`tasks.sql.execute`: record the statement id.

    Engines learn the id only once the statement is submitted, in the thread
    that runs it, so a daemon thread polls the session until the id is there
    or the task ends. Engines without statement ids (DuckDB) are skipped.
    """
    task_id = current_task_id()
    if task_id is None or not _has_statement_ids(session):
        return

    def poll() -> None:
        while task_id in _entries:
            try:
                statement = session.statement_id
            except Exception:  # noqa: BLE001 - a closed session: the task is ending
                return
            if statement:
                note(task_id, statement_id=str(statement))
                return
            time.sleep(STATEMENT_POLL_S)

    statement = getattr(session, "statement_id", None)
    if statement:
        note(task_id, statement_id=str(statement))
    else:
        threading.Thread(target=poll, name=f"turbo-statement-id-{task_id}", daemon=True).start()


def _has_statement_ids(session) -> bool:
    prop = getattr(type(session), "statement_id", None)
    getter = getattr(prop, "fget", None)
    # the abstract Session's property always answers None
    return getter is not None and getter.__qualname__ != "Session.statement_id"


def _write(path: Path, entry: dict) -> None:
    """Atomically (readers see the old entry or the new one); the folder is made again
    if it was swept meanwhile (``clear`` at a worker's start)."""
    tmp = f"{path.parent}/.{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    data = json.dumps(entry, default=str).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- reader side: the worker's main process -------------------------------------------
def entries(worker: str, kind: str | None = None, *, parent: int | None = None,
            clean: bool = True) -> Iterator[dict]:
    """The live entries of ``worker``; stale ones (dead pid, not our child) are removed.

    ``parent`` is the worker's main pid (default: this process); an entry counts
    only when its process is that one (threads/solo pool) or a child of it.
    """
    parent = os.getpid() if parent is None else parent
    if _in_memory and parent == os.getpid():
        yield from _memory_entries(kind)
        return
    folder = worker_dir(worker, parent)
    if not folder.is_dir():
        return
    now = time.time()
    for path in sorted(folder.glob("*.json")):
        entry = _read(path)
        if not entry:
            continue  # being replaced right now, or garbage: not worth a guess
        pid = entry.get("worker_pid")
        if not isinstance(pid, int) or not _ours(pid, parent):
            if clean:
                _unlink(path)
            continue
        if kind is not None and entry.get("kind") != kind:
            continue
        entry["elapsed_s"] = round(now - float(entry.get("started") or now), 3)
        yield entry


def _memory_entries(kind: str | None) -> Iterator[dict]:
    now = time.time()
    with _lock:
        found = [dict(entry) for _, entry in _entries.values()
                 if kind is None or entry.get("kind") == kind]
    for entry in sorted(found, key=lambda entry: entry["task_id"]):
        entry["elapsed_s"] = round(now - float(entry.get("started") or now), 3)
        yield entry


def clear(worker: str) -> None:
    """At worker start and stop: drop this worker's folder and those of dead workers."""
    me, mine = os.getpid(), _safe(worker)
    base = base_dir()
    if not base.is_dir():
        return
    for folder in base.iterdir():
        name, _, pid = folder.name.rpartition(".")
        if not pid.isdigit() or not folder.is_dir():
            continue
        if (name == mine and int(pid) == me) or not _alive(int(pid)):
            for path in folder.iterdir():
                _unlink(path)
            try:
                folder.rmdir()
            except OSError:
                pass


def _ours(pid: int, parent: int) -> bool:
    if pid == parent:
        return _alive(pid)
    ppid = parent_pid(pid)
    if ppid is None:  # no /proc: all we can tell is whether it lives
        return _alive(pid) and not Path("/proc/self").exists()
    return ppid == parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
