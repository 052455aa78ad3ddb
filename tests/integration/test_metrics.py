"""The project's Prometheus exporter (python -m celeryapp.monitoring.metrics) against real Redis,
real workers and the fake claude: queue depth, unacked messages, agent cost and runs."""
from __future__ import annotations

import math
import subprocess
import sys
import urllib.request
import uuid

import pytest
import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from celeryapp.core.names import host_queue
from celeryapp.dev.localredis import free_port
from celeryapp.monitoring import metrics
from support.helpers import wait_for

COST = 0.0123  # what tests/support/fakes/claude reports per run


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return parse(text)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for family in text_string_to_metric_families(text):  # fails on a malformed exposition
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def exporter(base_dir):
    port = free_port()
    log = open(base_dir / "logs" / "metrics-exporter.log", "ab") if (base_dir / "logs").is_dir() \
        else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "celeryapp.monitoring.metrics", "--port", str(port),
         "--discover-interval", "0"], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"

    def ready():
        if process.poll() is not None:
            raise RuntimeError(f"exporter exited with {process.returncode}")
        try:
            return scrape(url)
        except OSError:
            return None

    wait_for(ready, 30, "the exporter")
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def broker(test_env):
    client = redis.Redis.from_url(test_env["TURBO_BROKER_URL"])
    yield client
    client.close()


def drop_queue(broker, queue: str) -> None:
    broker.delete(*(name for _, name in metrics.priority_lists(queue)))
    for key in broker.scan_iter(match=metrics.BINDING_PREFIX + "*"):
        for member in broker.smembers(key):
            if metrics.binding_queue(member.decode()) == queue:
                broker.srem(key, member)


# --- against Redis and workers ------------------------------------------------------------
def test_queue_depth_per_queue_and_priority(exporter, broker, celery_app):
    """Tasks for a queue no worker consumes: the depth grows, split by priority step."""
    from tasks.query import run_query

    host = f"nobody-{uuid.uuid4().hex[:6]}"
    queue = host_queue(host)
    assert value(scrape(exporter), "turbo_queue_messages", queue=queue) == 0
    try:
        for _ in range(2):
            run_query.delay("SELECT 1", host=host, priority="high")
        samples = scrape(exporter)
        assert value(samples, "turbo_queue_messages", queue=queue) == 2
        for _ in range(3):
            run_query.delay("SELECT 1", host=host)  # normal
        run_query.delay("SELECT 1", host=host, priority="low")
        run_query.delay("SELECT 1", host=host, priority="critical")
        samples = scrape(exporter)
        assert value(samples, "turbo_queue_messages", queue=queue) == 7
        by = {name: value(samples, "turbo_queue_messages_by_priority", queue=queue,
                          priority=name, step=str(step))
              for name, step in (("critical", 0), ("high", 3), ("normal", 6), ("low", 9))}
        assert by == {"critical": 1, "high": 2, "normal": 3, "low": 1}
        assert broker.llen(f"{queue}:6") == 3 and broker.llen(queue) == 1  # kombu's lists
        # the configured queues are always reported
        for name in ("queries", "agents", "default"):
            assert ("turbo_queue_messages", frozenset({("queue", name)})) in samples
    finally:
        drop_queue(broker, queue)
    assert value(scrape(exporter), "turbo_queue_messages", queue=queue) == 0


def test_unacked_messages(exporter, broker, celery_app, start_worker):
    """A task a worker holds for its ETA is unacked; inspect shows its args redacted."""
    from tasks.query import run_query

    host = f"eta-{uuid.uuid4().hex[:6]}"
    queue = host_queue(host)
    worker = start_worker(host, queues=queue, concurrency=1)
    before = value(scrape(exporter), "turbo_unacked_messages")
    result = run_query.apply_async(("SELECT 'password=hunter2' AS x",), {"host": host},
                                   countdown=300)
    try:
        samples = wait_for(
            lambda: (lambda s: s if value(s, "turbo_unacked_messages_by_queue",
                                          queue=queue) == 1 else None)(scrape(exporter)),
            30, "one unacked message of " + queue)
        assert value(samples, "turbo_unacked_messages") >= before + 1
        scheduled = celery_app.control.inspect(destination=[worker.name], timeout=2).scheduled()
        shown = str(scheduled[worker.name])
        assert result.id in shown and "password=***" in shown and "hunter2" not in shown
    finally:
        result.revoke()
        worker.stop()
        drop_queue(broker, queue)


def test_agent_cost_and_runs(exporter, celery_app, shared_worker):
    """Each agent run adds its cost to its profile's total and counts its outcome."""
    from tasks.agent import run_agent
    from tasks.errors import AgentError

    before = scrape(exporter)
    ok = [run_agent.delay(f"say hi {i}") for i in range(2)]
    failed = run_agent.delay("[fake:error] fail please", retries=0)
    for result in ok:
        assert result.get(timeout=60)["cost_usd"] == pytest.approx(COST)
    with pytest.raises(AgentError) as raised:
        failed.get(timeout=60)
    assert raised.value.details["cost_usd"] == pytest.approx(COST)  # failed runs are billed

    def grown():
        now = scrape(exporter)
        runs = {outcome: value(now, "turbo_agent_runs_total", profile="claude", outcome=outcome)
                - value(before, "turbo_agent_runs_total", profile="claude", outcome=outcome)
                for outcome in ("success", "error")}
        return (now, runs) if runs == {"success": 2, "error": 1} else None

    now, _ = wait_for(grown, 15, "two successful and one failed run counted")
    cost = (value(now, "turbo_agent_cost_usd_total", profile="claude")
            - value(before, "turbo_agent_cost_usd_total", profile="claude"))
    assert cost == pytest.approx(3 * COST)  # the failed run was billed too


# --- units ----------------------------------------------------------------------------
def test_render_is_valid_prometheus_text():
    fam = GaugeMetricFamily("turbo_x", "a help text", labels=["queue"])
    fam.add_metric(['we"ird\\name\n'], 3)
    fam.add_metric(["b"], 1.5)
    counter = CounterMetricFamily("turbo_c", "c", labels=["profile"])
    counter.add_metric(["claude"], 2.25)
    samples = parse(metrics.render([fam, counter]))
    assert samples[("turbo_x", frozenset({("queue", 'we"ird\\name\n')}))] == 3
    assert samples[("turbo_c_total", frozenset({("profile", "claude")}))] == 2.25


def test_priority_lists_follow_kombu():
    assert metrics.priority_lists("queries") == [
        (0, "queries"), (3, "queries:3"), (6, "queries:6"), (9, "queries:9")]


def test_binding_members():
    assert metrics.binding_queue("queries::queries") == "queries"
    assert metrics.binding_queue("host.alpha::host.alpha") == "host.alpha"
    assert metrics.binding_queue("rk:pat:q") == "q"


def test_outcomes_and_costs_from_errors():
    from celery.exceptions import SoftTimeLimitExceeded

    from tasks.errors import (
        AgentAuthError,
        AgentError,
        AgentNotFound,
        AgentRateLimited,
        AgentTurnLimit,
        AgentUnavailable,
        InvalidRequest,
        TaskTimeout,
    )

    assert metrics.outcome_of(AgentRateLimited("x")) == "rate_limited"
    assert metrics.outcome_of(TaskTimeout("x")) == "timeout"
    assert metrics.outcome_of(SoftTimeLimitExceeded()) == "timeout"
    assert metrics.outcome_of(AgentNotFound("x")) == "not_found"
    assert metrics.outcome_of(InvalidRequest("x")) == "invalid"
    assert metrics.outcome_of(AgentError("x")) == "error"
    assert metrics.outcome_of(AgentTurnLimit("x")) == "turn_limit"
    assert metrics.outcome_of(AgentAuthError("x")) == "auth"
    assert metrics.outcome_of(AgentUnavailable("x")) == "unavailable"
    assert metrics.cost_from_error(AgentTurnLimit("stopped", {"cost_usd": 0.25,
                                                              "cost_usd_total": 0.75})) == 0.25
    assert metrics.cost_from_error(AgentError(
        "claude run failed (exit code 1, subtype error, cost_usd 0.5, session_id s)")) == 0.5
    assert metrics.cost_from_error(AgentError("no cost here")) is None
    assert metrics._profile_of(("p", "codex"), {}) == "codex"
    assert metrics._profile_of(("p",), {"profile": "gemini"}) == "gemini"
    assert metrics._profile_of((), {}, {"profile": "claude"}) == "claude"
    assert metrics._cost(float("nan")) is None and metrics._cost(True) is None


def test_redis_down_reports_up_zero():
    from celeryapp.config import Settings

    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    families = metrics.Collector(settings, discover_interval=0).collect()
    samples = parse(metrics.render(families))
    assert samples[("turbo_redis_up", frozenset())] == 0
    assert not math.isnan(samples[("turbo_scrape_duration_seconds", frozenset())])
