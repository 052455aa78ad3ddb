"""The caller's timeout as one budget for the whole call (tasks/budget.py)."""
from __future__ import annotations

import time

import pytest

from tasks.budget import FIRST_STARTED, Budget


def test_a_first_attempt_gets_the_whole_timeout():
    budget = Budget.of_attempt(5, {})
    assert budget.at_start == 5 and budget.timeout == 5
    assert abs(budget.first_started - time.time()) < 5
    assert budget.headers() == {FIRST_STARTED: budget.first_started}


@pytest.mark.parametrize("header", [None, "", "soon", [1]])
def test_a_missing_or_bad_header_starts_the_budget_now(header):
    assert Budget.of_attempt(5, {FIRST_STARTED: header}).at_start == 5


def test_a_retry_gets_what_is_left():
    budget = Budget.of_attempt(10, {FIRST_STARTED: time.time() - 4})
    assert 5 < budget.at_start <= 6 and 5 < budget.left() <= 6
    assert 4 <= budget.elapsed() < 5


@pytest.mark.parametrize("timeout, minimal", [(4, 1.0), (20, 5.0), (3600, 5.0)])
def test_a_minimal_attempt_is_5s_or_a_quarter_of_a_shorter_timeout(timeout, minimal):
    assert Budget.of_attempt(timeout, None).min_attempt == minimal


def test_a_retry_fits_only_with_a_minimal_attempt_after_its_pause():
    budget = Budget.of_attempt(10, {FIRST_STARTED: time.time() - 2})  # about 8 s left
    assert budget.min_attempt == 2.5
    assert budget.fits(1) and budget.fits(5)  # 3 s left after the pause: enough
    assert not budget.fits(6) and not budget.fits(60)  # 2 s or less: not
