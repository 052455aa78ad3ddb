"""Prometheus metrics Flower lacks: queue depth, unacked messages, agent cost and runs.

Two halves:

* **Recording, in the worker.** Signal handlers (connected when the app imports
  this module) count every ``turbo.agent`` run by profile and outcome and add its
  ``cost_usd`` to a per-profile total, in two Redis hashes of the result backend::

      HINCRBYFLOAT turbo:metrics:agent_cost_usd <profile> <cost>
      HINCRBY      turbo:metrics:agent_runs     <profile>:<outcome> 1

  Outcomes: ``success``, ``error``, ``timeout``, ``rate_limited`` and ``unavailable``
  (retries spent), ``auth`` (the API refused the key), ``turn_limit``, ``not_found``,
  ``invalid``, ``retried`` (an attempt that will be retried) and ``revoked``. Failed
  runs add the cost of the attempt their error's details report (claude bills failed
  runs too). A slot wait is not a run.

* **Exporting.** ``python -m celeryapp.monitoring.metrics`` serves ``/metrics`` with
  ``prometheus_client``: a :class:`Collector` reads Redis at each scrape, in a
  registry of its own (so none of the client's process metrics), behind
  ``prometheus_client.start_http_server`` (``TURBO_METRICS_PORT``, default 9808,
  ``TURBO_METRICS_ADDRESS``, default 127.0.0.1)::

      turbo_queue_messages{queue}                      messages waiting, all priorities
      turbo_queue_messages_by_priority{queue,priority,step}
      turbo_unacked_messages                           delivered to a worker, not acked yet
      turbo_unacked_messages_by_queue{queue}
      turbo_agent_cost_usd_total{profile}              counter
      turbo_agent_runs_total{profile,outcome}          counter
      turbo_redis_up, turbo_scrape_duration_seconds

  Queue depth is the sum of kombu's priority lists (``queries``, ``queries:3``,
  ``queries:6``, ``queries:9``); the queues are the configured ones plus every
  queue kombu has a binding for (``host.<name>`` queues), looked up every
  ``--discover-interval`` seconds.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable

import redis
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PrometheusCollector

from celeryapp.config import get_settings
from celeryapp.core.names import AGENT_TASK, PRIORITIES, PRIORITY_STEPS, QUEUE_SEP, QUEUES
from celeryapp.core.text import as_text

log = logging.getLogger(__name__)

COST_KEY = "turbo:metrics:agent_cost_usd"   # hash: profile -> dollars (float)
RUNS_KEY = "turbo:metrics:agent_runs"       # hash: "<profile>:<outcome>" -> count
UNACKED_KEY = "unacked"                     # kombu's Redis transport
BINDING_PREFIX = "_kombu.binding."
DEFAULT_PROFILE = "claude"
_COST_IN_MESSAGE = re.compile(r"\bcost_usd[ =:]+([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)")
_STEP_NAMES = {step: name for name, step in PRIORITIES.items()}


# --- recording (worker side) ---------------------------------------------------------
def _profile_of(args=None, kwargs=None, result=None) -> str:
    if isinstance(result, dict) and isinstance(result.get("profile"), str):
        return result["profile"]
    args, kwargs = list(args or ()), dict(kwargs or {})
    profile = args[1] if len(args) > 1 else kwargs.get("profile")
    return profile if isinstance(profile, str) and profile else DEFAULT_PROFILE


def _cost(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def cost_from_error(exc) -> float | None:
    """The cost of the attempt an agent error reports: its ``details["cost_usd"]``
    (this attempt only; ``cost_usd_total`` would count earlier attempts again), else
    a ``cost_usd 0.0123`` in its message."""
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("cost_usd") is not None:
        return _cost(details["cost_usd"])
    match = _COST_IN_MESSAGE.search(str(exc) if exc is not None else "")
    return _cost(float(match.group(1))) if match else None


def outcome_of(exc) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "AgentRateLimited" in names:
        return "rate_limited"
    if "AgentUnavailable" in names:
        return "unavailable"
    if "AgentAuthError" in names:
        return "auth"
    if "AgentTurnLimit" in names:
        return "turn_limit"
    if names & {"TaskTimeout", SoftTimeLimitExceeded.__name__, TimeLimitExceeded.__name__}:
        return "timeout"
    if "AgentNotFound" in names:
        return "not_found"
    if "InvalidRequest" in names:
        return "invalid"
    return "error"


def record_agent_run(client, profile: str, outcome: str, cost: float | None) -> None:
    """Count one run and add its cost (0 keeps the profile's series present)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrbyfloat(COST_KEY, profile, cost or 0.0)
    pipe.hincrby(RUNS_KEY, f"{profile}:{outcome}", 1)
    pipe.execute()


def _record(task, profile: str, outcome: str, cost: float | None) -> None:
    try:
        record_agent_run(task.app.backend.client, profile, outcome, cost)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a task
        log.warning("could not record agent metrics (%s, %s): %r", profile, outcome, exc)


def _is_agent(sender) -> bool:
    return getattr(sender, "name", None) == AGENT_TASK


@signals.task_success.connect
def _agent_succeeded(sender=None, result=None, **_):
    if not _is_agent(sender):
        return
    request = sender.request
    profile = _profile_of(request.args, request.kwargs, result)
    cost = _cost(result.get("cost_usd")) if isinstance(result, dict) else None
    _record(sender, profile, "success", cost)


@signals.task_failure.connect
def _agent_failed(sender=None, exception=None, args=None, kwargs=None, **_):
    if not _is_agent(sender):
        return
    _record(sender, _profile_of(args, kwargs), outcome_of(exception), cost_from_error(exception))


@signals.task_retry.connect
def _agent_retried(sender=None, request=None, reason=None, **_):
    if not _is_agent(sender):
        return
    cause = getattr(reason, "exc", None) or reason  # celery's Retry wraps the error
    if type(cause).__name__ == "SlotsBusy":
        return  # waited for a slot: the agent did not run
    profile = _profile_of(getattr(request, "args", None), getattr(request, "kwargs", None))
    _record(sender, profile, "retried", cost_from_error(cause))


@signals.task_revoked.connect
def _agent_revoked(sender=None, request=None, **_):
    if not _is_agent(sender):
        return
    _record(sender, _profile_of(getattr(request, "args", None),
                                getattr(request, "kwargs", None)), "revoked", None)


# --- exporting -----------------------------------------------------------------------
def render(families: Iterable[Metric]) -> str:
    """These metric families in the Prometheus text format (0.0.4), by prometheus_client."""
    families = list(families)

    class Collected(PrometheusCollector):
        def collect(self):
            return families

    return generate_latest(Collected()).decode()


def priority_lists(queue: str) -> list[tuple[int, str]]:
    """kombu's Redis lists of one queue: (step, list name); step 0 is the bare name."""
    return [(step, queue if step == 0 else f"{queue}{QUEUE_SEP}{step}")
            for step in PRIORITY_STEPS]


def binding_queue(member: str, sep: str = QUEUE_SEP) -> str:
    """The queue of a kombu binding, ``<routing key><sep><pattern><sep><queue>``.

    kombu joins with the transport's ``sep`` (":" here, as for the priority lists),
    so a queue name with ":" in it makes the split ambiguous: the pattern
    is empty for direct exchanges, so split at the first empty field.
    """
    parts = member.split(sep)
    if len(parts) == 3:
        return parts[2]
    _key, empty, rest = member.partition(sep + sep)
    return rest if empty else parts[-1]


class Collector(PrometheusCollector):
    """Reads the broker and the result backend at each scrape; one per exporter."""

    def __init__(self, settings=None, discover_interval: float = 30.0,
                 extra_queues: tuple[str, ...] = ()):
        self.settings = settings or get_settings()
        self.discover_interval = discover_interval
        self.extra_queues = tuple(extra_queues)
        self._broker = self._backend = None
        self._discovered: set[str] = set()
        self._discovered_at = 0.0
        self._lock = threading.Lock()

    # redis clients, made on first use and kept
    def _client(self, url: str):
        kwargs = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 25}
        ssl_options = self.settings.redis_ssl_options()
        if url.startswith("rediss://") and ssl_options:
            kwargs.update(ssl_options)
        return redis.Redis.from_url(url, **kwargs)

    @property
    def broker(self):
        if self._broker is None:
            self._broker = self._client(self.settings.broker)
        return self._broker

    @property
    def backend(self):
        if self._backend is None:
            self._backend = (self.broker if self.settings.backend == self.settings.broker
                             else self._client(self.settings.backend))
        return self._backend

    def queues(self) -> list[str]:
        """Configured queues, extra ones, and those kombu has bindings for (cached)."""
        now = time.monotonic()
        if now - self._discovered_at >= self.discover_interval:
            found = set()
            for key in self.broker.scan_iter(match=BINDING_PREFIX + "*", count=1000):
                for member in self.broker.smembers(key):
                    queue = binding_queue(as_text(member))
                    if queue and not queue.endswith(".pidbox") and "celeryev" not in queue:
                        found.add(queue)
            self._discovered, self._discovered_at = found, now
        return sorted(set(QUEUES) | set(self.extra_queues) | self._discovered)

    def collect(self) -> list[Metric]:
        with self._lock:
            started = time.monotonic()
            try:
                families, up = self._queue_families() + self._agent_families(), 1
            except Exception as exc:  # noqa: BLE001 - reported as turbo_up 0
                log.warning("metrics scrape failed: %r", exc)
                self._broker = self._backend = None  # reconnect next time
                families, up = [], 0
            return [
                GaugeMetricFamily("turbo_redis_up", "1 if the broker and backend Redis answered",
                                  value=up),
                *families,
                GaugeMetricFamily("turbo_scrape_duration_seconds", "time this scrape took",
                                  value=time.monotonic() - started),
            ]

    def _queue_families(self) -> list[Metric]:
        queues = self.queues()
        pipe = self.broker.pipeline(transaction=False)
        for queue in queues:
            for _, name in priority_lists(queue):
                pipe.llen(name)
        lengths = iter(pipe.execute())
        total = GaugeMetricFamily("turbo_queue_messages",
                                  "messages waiting in a queue (sum of its priority lists)",
                                  labels=["queue"])
        by_priority = GaugeMetricFamily(
            "turbo_queue_messages_by_priority",
            "messages waiting in a queue at one priority step (0 first)",
            labels=["queue", "priority", "step"])
        for queue in queues:
            count = 0
            for step, _ in priority_lists(queue):
                n = next(lengths)
                count += n
                by_priority.add_metric([queue, _STEP_NAMES.get(step, str(step)), str(step)], n)
            total.add_metric([queue], count)

        counts: dict[str, int] = {queue: 0 for queue in queues}
        n = 0
        for _, payload in self.broker.hscan_iter(UNACKED_KEY, count=500):
            n += 1
            try:
                _message, _exchange, routing_key = json.loads(payload)
            except (ValueError, TypeError):
                routing_key = "?"
            queue = as_text(routing_key) or "?"
            counts[queue] = counts.get(queue, 0) + 1
        unacked = GaugeMetricFamily("turbo_unacked_messages",
                                    "messages delivered to workers and not acknowledged yet "
                                    "(running, reserved, or waiting for an ETA)", value=n)
        by_queue = GaugeMetricFamily("turbo_unacked_messages_by_queue",
                                     "unacknowledged messages by the queue they came from",
                                     labels=["queue"])
        for queue, count in sorted(counts.items()):
            by_queue.add_metric([queue], count)
        return [total, by_priority, unacked, by_queue]

    def _agent_families(self) -> list[Metric]:
        pipe = self.backend.pipeline(transaction=False)
        pipe.hgetall(COST_KEY)
        pipe.hgetall(RUNS_KEY)
        costs, runs = pipe.execute()
        # counters: prometheus_client names the samples <name>_total
        cost = CounterMetricFamily("turbo_agent_cost_usd",
                                   "dollars the agent CLIs reported, by profile",
                                   labels=["profile"])
        for profile, value in sorted((as_text(k), float(v)) for k, v in costs.items()):
            cost.add_metric([profile], value)
        count = CounterMetricFamily("turbo_agent_runs", "agent runs by profile and outcome",
                                    labels=["profile", "outcome"])
        for field, value in sorted((as_text(k), int(v)) for k, v in runs.items()):
            profile, _, outcome = field.rpartition(":")
            count.add_metric([profile or DEFAULT_PROFILE, outcome], value)
        return [cost, count]

    def close(self) -> None:
        for client in {id(c): c for c in (self._broker, self._backend) if c}.values():
            client.close()


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m celeryapp.monitoring.metrics",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=settings.metrics_port,
                        help="TCP port (TURBO_METRICS_PORT, default 9808; 0 picks a free one)")
    parser.add_argument("--address", default=settings.metrics_address,
                        help="address to listen on (TURBO_METRICS_ADDRESS, default 127.0.0.1)")
    parser.add_argument("--discover-interval", type=float, default=30.0,
                        help="seconds between looks for new queues (host.<name>)")
    parser.add_argument("--queue", action="append", default=[],
                        help="also report this queue (repeatable)")
    parser.add_argument("--once", action="store_true", help="print the metrics once and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    collector = Collector(settings, args.discover_interval, tuple(args.queue))
    registry = CollectorRegistry()  # ours only: no process/GC metrics of the exporter
    registry.register(collector)
    if args.once:
        sys.stdout.write(render(registry.collect()))
        collector.close()
        return 0
    server, thread = start_http_server(args.port, args.address, registry)
    host, port = server.server_address[:2]
    print(f"agent-turbo metrics on http://{host}:{port}/metrics", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        collector.close()
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # a clean stop on TERM
    sys.exit(main())
