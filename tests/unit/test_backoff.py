"""celeryapp/core/backoff.py: the one backoff rule of every retry in the project."""
from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from celeryapp.core import backoff


def test_steps_grow_by_the_factor_up_to_the_cap():
    assert [backoff.ceiling(n, 1.0, 300.0) for n in range(10)] == \
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]  # turbo.notify's countdowns
    assert [backoff.ceiling(n, 1.0, 30.0, factor=1.5) for n in range(3)] == [1.0, 1.5, 2.25]
    assert backoff.ceiling(-3, 0.05, 2.0) == 0.05


@given(attempt=st.integers(0, 60), base=st.floats(0.01, 10), cap=st.floats(0.01, 600),
       factor=st.floats(1.0, 3.0))
def test_a_pause_is_in_the_upper_half_of_its_step(attempt, base, cap, factor):
    step = backoff.ceiling(attempt, base, cap, factor)
    assert step <= cap + 1e-9
    assert step / 2 <= backoff.pause(attempt, base, cap, factor) <= step


def test_pauses_follow_the_steps():
    pauses = list(itertools.islice(backoff.pauses(0.05, 2.0), 8))
    steps = [backoff.ceiling(n, 0.05, 2.0) for n in range(8)]
    assert all(s / 2 <= p <= s for p, s in zip(pauses, steps, strict=True))
    assert len(set(pauses)) > 1  # jittered
