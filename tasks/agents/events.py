"""Reading a CLI's stdout as it comes: whole text (one JSON answer) or JSON lines (events).

A CLI that streams events (``claude --output-format stream-json``, ``codex exec
--json``) can print megabytes over a long run - every tool result is an event -
while the worker needs only a few facts: the session id, the retries, the turns,
the usage so far, the final result. :class:`JsonLines` hands each event to a
profile's ``on_event`` as the line completes and keeps only a bounded tail of
the text, so memory per run stays flat however long it runs, and a run cut
short (timeout) still tells what it had done.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_STDOUT_BYTES = 64 * 1024 * 1024
"""A CLI that prints one answer: more than this on stdout fails the run."""
MAX_LINE_BYTES = 16 * 1024 * 1024
"""One event longer than this is skipped (counted in ``skipped_lines``), not kept."""
TAIL_BYTES = 64 * 1024


class Output:
    """The bytes of one pipe: its head (stdout, up to a cap) or its tail (stderr)."""

    def __init__(self, keep_tail: bool, limit: int):
        self._keep_tail, self._limit = keep_tail, limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflow = False

    def add(self, chunk: bytes) -> None:
        if self.overflow:
            return  # past the cap: read on so the CLI never blocks, keep nothing
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._limit:
            data = b"".join(self._chunks)
            if self._keep_tail:
                data = data[-self._limit:]
            else:
                self.overflow, data = True, data[:self._limit]
            self._chunks, self._size = [data], len(data)

    def text(self) -> str:
        return b"".join(list(self._chunks)).decode("utf-8", errors="replace")


class JsonLines:
    """stdout as JSON lines: each object goes to ``events.on_event`` (a profile's
    reading of them, kept as ``self.events``); a bounded tail of the text is kept."""

    overflow = False  # never: events are consumed, not stored

    def __init__(self, events: Any):
        self.events = events
        self._on_event: Callable[[dict], None] = events.on_event
        self._partial = bytearray()
        self._tail = Output(keep_tail=True, limit=TAIL_BYTES)
        self._skipping = False
        self.lines = 0
        self.skipped_lines = 0
        self.other_lines = 0  # not a JSON object: log lines, progress

    def add(self, chunk: bytes) -> None:
        self._tail.add(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep_partial(chunk[start:])
                return
            self._keep_partial(chunk[start:end])
            self._line_done()
            start = end + 1

    def finish(self) -> None:
        """The pipe closed: a last line without a newline still counts."""
        if self._partial or self._skipping:
            self._line_done()

    def text(self) -> str:
        """The last ``TAIL_BYTES`` of stdout (for messages)."""
        return self._tail.text()

    def _keep_partial(self, piece: bytes) -> None:
        if self._skipping:
            return
        self._partial += piece
        if len(self._partial) > MAX_LINE_BYTES:
            self._skipping = True
            self._partial = bytearray()

    def _line_done(self) -> None:
        if self._skipping:
            self._skipping = False
            self.skipped_lines += 1
            return
        line, self._partial = bytes(self._partial), bytearray()
        if not line.strip():
            return
        self.lines += 1
        try:
            event: Any = json.loads(line)
        except ValueError:
            self.other_lines += 1
            return
        if isinstance(event, dict):
            self._on_event(event)
        elif isinstance(event, list):  # `--output-format json --verbose`: one array
            for item in event:
                if isinstance(item, dict):
                    self._on_event(item)
        else:
            self.other_lines += 1
