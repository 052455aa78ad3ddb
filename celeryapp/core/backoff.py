"""One backoff rule for every retry of the project: exponential, capped, with "equal
jitter" (a random pause in the upper half of the step), so that many callers that failed
together do not come back together, and none waits less than half its step.

Used by the task retries (``tasks/base.py``: transient errors, an agent waiting for a
slot) and the workflow store's retries while Redis is away (``celeryapp/flows/store.py``).
"""
from __future__ import annotations

import random
from collections.abc import Iterator


def ceiling(attempt: int, base: float, cap: float, factor: float = 2.0) -> float:
    """The step of ``attempt`` (0 for the first retry): ``base * factor ** attempt``,
    at most ``cap``."""
    return min(cap, base * factor ** max(0, attempt))


def pause(attempt: int, base: float, cap: float, factor: float = 2.0) -> float:
    """A pause before retry ``attempt``: uniformly in the upper half of its step."""
    step = ceiling(attempt, base, cap, factor)
    return random.uniform(step / 2, step)


def pauses(base: float, cap: float, factor: float = 2.0) -> Iterator[float]:
    """The pauses of retries 0, 1, 2, ... (an endless iterator)."""
    attempt = 0
    while True:
        yield pause(attempt, base, cap, factor)
        attempt += 1
