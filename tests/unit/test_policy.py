"""celeryapp.core.policy: the one request policy behind delay(), workflows and turbo."""
from __future__ import annotations

import pytest

from celeryapp.core.errors import InvalidRequest
from celeryapp.core.names import NOTIFY_HEADER, PRIORITIES
from celeryapp.core.policy import Limits, call_options, check_timeout, time_limits

LIMITS = Limits(300, 3600, 30, "TURBO_QUERY_MAX_TIMEOUT", "normal")


def test_routing_kwargs_become_options_and_timeout_becomes_limits():
    kwargs, options = call_options({"params": [1], "priority": "high", "host": "alpha",
                                    "timeout": 10}, {}, LIMITS)
    assert kwargs == {"params": [1], "timeout": 10}
    assert options["queue"] == "host.alpha"
    assert options["priority"] == PRIORITIES["high"]
    assert (options["soft_time_limit"], options["time_limit"]) == (40, 70)


def test_defaults_apply_without_options():
    kwargs, options = call_options(None, {}, LIMITS)
    assert kwargs == {}
    assert options["priority"] == PRIORITIES["normal"]
    assert (options["soft_time_limit"], options["time_limit"]) == time_limits(300, 30)


def test_notify_moves_to_a_header():
    kwargs, options = call_options({"notify": {"dir": "/tmp/n"}}, {"headers": {"a": 1}}, LIMITS)
    assert "notify" not in kwargs
    assert options["headers"] == {"a": 1, NOTIFY_HEADER: {"dir": "/tmp/n"}}


@pytest.mark.parametrize("kwargs, options, message", [
    ({"host": "alpha"}, {"queue": "q"}, "queue or host, not both"),
    ({}, {"queue": "a:b"}, "queue name must be non-empty"),
    ({"priority": "urgent"}, {}, "unknown priority 'urgent'"),
    ({"timeout": 0}, {}, "timeout must be a positive number"),
    ({"timeout": True}, {}, "timeout must be a positive number"),
    ({"timeout": 4000}, {}, r"timeout 4000s exceeds the maximum of 3600s \(TURBO_QUERY_MAX_TIMEOUT\)"),
    ({"notify": {"webhook": "ftp://x"}}, {}, "notify.webhook must be an http"),
    ({"notify": {"mail": "x"}}, {}, "notify must be a mapping"),
])
def test_bad_requests_are_named(kwargs, options, message):
    with pytest.raises(InvalidRequest, match=message):
        call_options(kwargs, options, LIMITS)


def test_the_shell_wording_of_the_same_check():
    with pytest.raises(ValueError, match=r"^--timeout 4000s exceeds the maximum of 3600s for a "
                                         r"query \(TURBO_QUERY_MAX_TIMEOUT\)$"):
        check_timeout(4000, LIMITS, label="--timeout", where=" for a query")
