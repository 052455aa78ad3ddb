"""Bounding the connector's own 429/503 retries by the call's deadline.

The connector retries 429/503 (a warehouse starting says ``TEMPORARILY_UNAVAILABLE``)
by itself, sleeping at least ``_retry_delay_max`` (never less than 5 s) per retry. It
is bounded here so that it can never outlast the call's deadline: 5 s between retries,
at most :data:`RETRY_ATTEMPTS` of them, and a duration budget of what is left of the
deadline, given when the connection opens (:func:`retry_args`) and set again before
each request (:func:`bound_retries`); past that it gives up and the error becomes
:class:`~tasks.errors.EngineUnavailable`, which the Celery task retries with the
project's backoff.

The duration budget lives in private names of connector 4.9
(``_retry_stop_after_attempts_duration`` on the Thrift backend and
``stop_after_attempts_duration`` on its retry policy);
``tests/unit/test_databricks_engine.py`` checks that they exist. Without them the
call's deadline still stops the statement, only later.
"""
from __future__ import annotations

import time

RETRY_DELAY_MAX_S = 5.0  # the connector refuses less: every retry sleeps at least this
RETRY_ATTEMPTS = 3
MIN_RETRY_BUDGET_S = 1.0  # the connector refuses less


def retry_budget(deadline: float) -> float:
    """What is left until ``deadline`` (``time.monotonic()``), at least the connector's 1 s."""
    return max(MIN_RETRY_BUDGET_S, deadline - time.monotonic())


def retry_args(deadline: float | None) -> dict:
    """The connector's retry settings for ``databricks.sql.connect``."""
    args: dict = {"_retry_delay_max": RETRY_DELAY_MAX_S,
                  "_retry_stop_after_attempts_count": RETRY_ATTEMPTS}
    if deadline is not None:
        args["_retry_stop_after_attempts_duration"] = retry_budget(deadline)
    return args


def bound_retries(connection, deadline: float | None) -> None:
    """Give the connector's 429/503 retry of ``connection`` what is left until ``deadline``:
    set before each request, since a pooled connection outlives the call that opened it.
    Anything that is not a connector 4.9 connection is left alone."""
    if deadline is None:
        return
    budget = retry_budget(deadline)
    backend = getattr(getattr(connection, "session", None), "backend", None)
    if backend is None:
        return
    if hasattr(backend, "_retry_stop_after_attempts_duration"):
        backend._retry_stop_after_attempts_duration = budget
    policy = getattr(backend, "retry_policy", None)
    if policy is not None and hasattr(policy, "stop_after_attempts_duration"):
        policy.stop_after_attempts_duration = budget
