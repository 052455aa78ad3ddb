"""A per-host cap on concurrent agent runs, shared by every worker on the host.

Agent CLIs are heavy (a Node process, tools, tokens per minute); worker
concurrency is per worker, so the cap lives in the file system: ``N`` files
``slot-0 .. slot-(N-1)`` under ``<agent_slots_dir>/<host>/``, each held with
``flock``. The kernel drops a lock when its holder dies, so a crashed or
SIGKILLed worker process never leaks a slot. The lock file descriptor is not
inherited by the agent (Python opens files close-on-exec), so a stray agent
process cannot hold a slot after its worker process is gone either.
"""
from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..deadline import Cancelled, StopEvent
from ..errors import SlotsBusy

POLL_S = 0.2


class HostSlots:
    def __init__(self, directory: Path | str, count: int):
        self.directory = Path(directory)
        self.count = count  # 0: no cap

    @contextmanager
    def acquire(self, timeout: float, note: str = "",
                stop: StopEvent | None = None) -> Iterator[int | None]:
        """Hold a free slot for the block (its index); wait up to ``timeout`` seconds for
        one (:class:`SlotsBusy` then), or until ``stop`` is set (:class:`Cancelled`)."""
        if self.count <= 0:
            yield None
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            held = self._try_any(note)
            if held is not None:
                break
            if stop is not None and stop.is_set():
                raise Cancelled("stopped on request while waiting for an agent slot")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SlotsBusy(f"all {self.count} agent slots in {self.directory} are busy "
                                f"(TURBO_AGENT_CONCURRENCY={self.count})")
            pause = min(remaining, POLL_S * random.uniform(0.5, 1.5))
            if stop is None:
                time.sleep(pause)
            else:
                stop.wait(pause)
        index, fd = held
        try:
            yield index
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _try_any(self, note: str) -> tuple[int, int] | None:
        # A random start spreads waiters over the slots instead of all probing slot-0.
        start = random.randrange(self.count)
        for offset in range(self.count):
            index = (start + offset) % self.count
            fd = os.open(self.directory / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _describe(fd, note)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return index, fd
        return None

    def holders(self) -> dict[int, str]:
        """Busy slots and what their files say about the holder (for ops and tests)."""
        busy: dict[int, str] = {}
        for index in range(self.count):
            path = self.directory / f"slot-{index}"
            if not path.exists():
                continue
            with open(path, "r+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy[index] = handle.read().strip()
        return busy


def _describe(fd: int, note: str) -> None:
    """Write who holds the slot into its file, for an operator reading ``cat slot-*``."""
    line = f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')} {note}".strip() + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, line.encode(), 0)
