"""The caller's ``timeout``: one budget for the whole call, every attempt and the pauses
between them included; no Celery here.

The first attempt notes when it started (wall clock: a retry may run on another host)
and each retry's message carries that in a header (:data:`FIRST_STARTED`), so every
attempt gets what is left as its own deadline, and a retry whose backoff pause plus a
minimal attempt would not fit is not made.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FIRST_STARTED = "turbo_first_started"
MIN_ATTEMPT_S = 5.0  # a retry with less of the timeout left (or 1/4 of it) is not made


@dataclass(frozen=True)
class Budget:
    """``timeout`` seconds from ``first_started`` (``time.time()``); ``at_start``: what
    was left when this attempt started (the whole ``timeout`` for a first attempt)."""
    timeout: float
    first_started: float
    at_start: float

    @classmethod
    def of_attempt(cls, timeout: float, headers: Mapping[str, Any] | None) -> Budget:
        """The budget of the attempt whose message has ``headers``."""
        now = time.time()
        try:
            first = float((headers or {}).get(FIRST_STARTED) or 0) or now
        except (TypeError, ValueError):
            first = now
        return cls(timeout, first, timeout - (now - first))

    @property
    def min_attempt(self) -> float:
        """The shortest attempt worth starting: 5 s, or a quarter of a shorter timeout."""
        return min(MIN_ATTEMPT_S, self.timeout / 4)

    def elapsed(self) -> float:
        return time.time() - self.first_started

    def left(self) -> float:
        return self.timeout - self.elapsed()

    def fits(self, pause: float) -> bool:
        """Whether an attempt after ``pause`` seconds would still get a minimal attempt's
        time."""
        return self.left() - pause >= self.min_attempt

    def headers(self) -> dict[str, float]:
        """What a retry's message carries so that its attempt knows this budget."""
        return {FIRST_STARTED: self.first_started}
