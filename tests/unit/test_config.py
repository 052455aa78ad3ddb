"""Settings and the Celery configuration derived from them (no broker needed)."""
from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from celeryapp.config import Settings, redact_url, with_password
from celeryapp.core.policy import priority_value
from celeryapp.factory import celery_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Defaults as a fresh process sees them, not the test session's TURBO_* values."""
    import os

    for name in list(os.environ):
        if name.startswith("TURBO_"):
            monkeypatch.delenv(name)


def test_json_only_and_reliability_settings():
    conf = celery_config(Settings(broker_url="redis://h:1/0"))
    assert conf["accept_content"] == ["json"]
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_track_started"]
    assert conf["broker_connection_retry_on_startup"]
    # running tasks run on through a Redis outage (holders.py); stock kombu needs the cancel
    assert not conf["worker_cancel_long_running_tasks_on_connection_loss"]
    assert conf["result_backend"] == "redis://h:1/0"
    assert {q.name for q in conf["task_queues"]} == {"queries", "agents", "default", "warehouse"}
    assert conf["task_routes"]["turbo.query"]["queue"] == "queries"
    assert conf["task_routes"]["turbo.agent"]["queue"] == "agents"


def test_visibility_timeout_outlasts_the_longest_hard_limit():
    settings = Settings(query_max_timeout=7200, agent_max_timeout=600, agent_timeout=600,
                        time_limit_grace=60,
                        visibility_margin=300)
    conf = celery_config(settings)
    hard = 7200 + 60 + 60
    vt = conf["broker_transport_options"]["visibility_timeout"]
    assert vt == hard + 300
    assert conf["result_backend_transport_options"]["visibility_timeout"] == vt


@pytest.mark.parametrize("margin", [0, -5, float("nan"), float("inf")])
def test_a_visibility_margin_that_would_redeliver_running_tasks_is_refused(margin):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="visibility_margin"):
        Settings(visibility_margin=margin)


def test_priority_steps_and_names():
    conf = celery_config(Settings())
    assert conf["broker_transport_options"]["priority_steps"] == [0, 3, 6, 9]
    assert conf["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert conf["task_default_priority"] == 6
    assert [priority_value(p, "normal")
            for p in ("critical", "high", "normal", "low")] == [0, 3, 6, 9]
    assert priority_value(None, "low") == 9
    with pytest.raises(ValueError, match="unknown priority 'asap'"):
        priority_value("asap", "normal")


def test_redis_password_goes_into_urls_without_one():
    assert with_password("redis://h:6379/0", "p@ss") == "redis://:p%40ss@h:6379/0"
    assert with_password("redis://:mine@h:6379/0", "other") == "redis://:mine@h:6379/0"
    settings = Settings(broker_url="redis://h:6379/0", redis_password="s3cret")
    conf = celery_config(settings)
    assert conf["broker_url"] == conf["result_backend"] == "redis://:s3cret@h:6379/0"
    assert "s3cret" not in repr(settings)
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"


def test_tls_urls_verify_the_server():
    settings = Settings(broker_url="rediss://h:6380/0", redis_tls_ca="/etc/ca.pem")
    conf = celery_config(settings)
    assert conf["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert conf["broker_use_ssl"]["ssl_ca_certs"] == "/etc/ca.pem"
    assert conf["redis_backend_use_ssl"] == conf["broker_use_ssl"]
    assert celery_config(Settings(broker_url="redis://h/0"))["broker_use_ssl"] is None


def test_bad_settings_are_named(monkeypatch):
    monkeypatch.setenv("TURBO_DEFAULT_PRIORITY", "urgent")
    with pytest.raises(ValidationError, match="unknown priority 'urgent'"):
        Settings()
    monkeypatch.delenv("TURBO_DEFAULT_PRIORITY")
    monkeypatch.setenv("TURBO_QUERY_TIMEOUT", "9000")
    with pytest.raises(ValidationError, match="TURBO_QUERY_TIMEOUT exceeds"):
        Settings()


def test_duckdb_file_is_read_only_by_default():
    assert Settings(duckdb_path="/data/x.duckdb").duckdb_is_read_only
    assert not Settings(duckdb_path=":memory:").duckdb_is_read_only
    assert not Settings(duckdb_path="/data/x.duckdb", duckdb_read_only=False).duckdb_is_read_only
