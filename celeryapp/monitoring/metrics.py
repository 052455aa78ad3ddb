"""Prometheus metrics Flower lacks: queue depth, unacked messages, agent cost and runs.

Two halves:

* **Recording, in the worker.** Signal handlers (connected when the app imports
  this module) count every ``turbo.agent`` run by profile and outcome and add its
  ``cost_usd`` to a per-profile total, in two Redis hashes of the result backend::

      HINCRBYFLOAT turbo:metrics:agent_cost_usd <profile> <cost>
      HINCRBY      turbo:metrics:agent_runs     <profile>:<outcome> 1

  Outcomes: ``success``, ``error``, ``timeout``, ``rate_limited`` (retries spent),
  ``not_found``, ``invalid``, ``retried`` (a rate-limited attempt that will be
  retried) and ``revoked``. Failed runs add the cost their error message reports
  (claude bills failed runs too). A slot wait is not a run.

* **Exporting.** ``python -m celeryapp.monitoring.metrics`` serves ``/metrics`` in the
  Prometheus text format (standard library HTTP server; ``TURBO_METRICS_PORT``,
  default 9808, ``TURBO_METRICS_ADDRESS``, default 127.0.0.1)::

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
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from celery import signals

from celeryapp.core.names import AGENT_TASK, PRIORITIES, PRIORITY_STEPS, QUEUE_SEP, QUEUES

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
    """The cost an agent error message reports (``..., cost_usd 0.0123, ...``)."""
    match = _COST_IN_MESSAGE.search(str(exc) if exc is not None else "")
    return _cost(float(match.group(1))) if match else None


def outcome_of(exc) -> str:
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    names = {cls.__name__ for cls in type(exc).__mro__}
    if "AgentRateLimited" in names:
        return "rate_limited"
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
    except Exception as exc:  # metrics never fail a task
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
class Family:
    """One metric family: name, type, help and its samples."""

    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> "Family":
        self.samples.append((self.name + suffix, labels, value))
        return self


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def render(families: list[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for name, labels, value in family.samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text
                         else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Collector:
    """Reads the broker and the result backend; one instance per exporter."""

    def __init__(self, settings=None, discover_interval: float = 30.0,
                 extra_queues: tuple[str, ...] = ()):
        from celeryapp.config import get_settings

        self.settings = settings or get_settings()
        self.discover_interval = discover_interval
        self.extra_queues = tuple(extra_queues)
        self._broker = self._backend = None
        self._discovered: set[str] = set()
        self._discovered_at = 0.0
        self._lock = threading.Lock()

    # redis clients, made on first use and kept
    def _client(self, url: str):
        import redis

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
                    queue = binding_queue(_text(member))
                    if queue and not queue.endswith(".pidbox") and "celeryev" not in queue:
                        found.add(queue)
            self._discovered, self._discovered_at = found, now
        return sorted(set(QUEUES) | set(self.extra_queues) | self._discovered)

    def collect(self) -> list[Family]:
        with self._lock:
            started = time.monotonic()
            up = Family("turbo_redis_up", "gauge", "1 if the broker and backend Redis answered")
            families = [up]
            try:
                families += self._queue_families() + self._agent_families()
                up.add(1)
            except Exception as exc:
                log.warning("metrics scrape failed: %r", exc)
                self._broker = self._backend = None  # reconnect next time
                up.add(0)
            families.append(Family("turbo_scrape_duration_seconds", "gauge",
                                   "time this scrape took").add(time.monotonic() - started))
            return families

    def _queue_families(self) -> list[Family]:
        queues = self.queues()
        pipe = self.broker.pipeline(transaction=False)
        for queue in queues:
            for _, name in priority_lists(queue):
                pipe.llen(name)
        lengths = iter(pipe.execute())
        total = Family("turbo_queue_messages", "gauge",
                       "messages waiting in a queue (sum of its priority lists)")
        by_priority = Family("turbo_queue_messages_by_priority", "gauge",
                             "messages waiting in a queue at one priority step (0 first)")
        for queue in queues:
            count = 0
            for step, _ in priority_lists(queue):
                n = next(lengths)
                count += n
                by_priority.add(n, queue=queue, priority=_STEP_NAMES.get(step, str(step)),
                                step=str(step))
            total.add(count, queue=queue)

        unacked = Family("turbo_unacked_messages", "gauge",
                         "messages delivered to workers and not acknowledged yet "
                         "(running, reserved, or waiting for an ETA)")
        by_queue = Family("turbo_unacked_messages_by_queue", "gauge",
                          "unacknowledged messages by the queue they came from")
        counts: dict[str, int] = {queue: 0 for queue in queues}
        n = 0
        for _, payload in self.broker.hscan_iter(UNACKED_KEY, count=500):
            n += 1
            try:
                _message, _exchange, routing_key = json.loads(payload)
            except (ValueError, TypeError):
                routing_key = "?"
            queue = _text(routing_key) or "?"
            counts[queue] = counts.get(queue, 0) + 1
        unacked.add(n)
        for queue, count in sorted(counts.items()):
            by_queue.add(count, queue=queue)
        return [total, by_priority, unacked, by_queue]

    def _agent_families(self) -> list[Family]:
        pipe = self.backend.pipeline(transaction=False)
        pipe.hgetall(COST_KEY)
        pipe.hgetall(RUNS_KEY)
        costs, runs = pipe.execute()
        cost = Family("turbo_agent_cost_usd", "counter",
                      "dollars the agent CLIs reported, by profile")
        for profile, value in sorted((_text(k), float(v)) for k, v in costs.items()):
            cost.add(value, "_total", profile=profile)
        count = Family("turbo_agent_runs", "counter", "agent runs by profile and outcome")
        for field, value in sorted((_text(k), int(v)) for k, v in runs.items()):
            profile, _, outcome = field.rpartition(":")
            count.add(value, "_total", profile=profile or DEFAULT_PROFILE, outcome=outcome)
        return [cost, count]

    def close(self) -> None:
        for client in {id(c): c for c in (self._broker, self._backend) if c}.values():
            client.close()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_server(collector: Collector, address: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "agent-turbo-metrics"

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, status, kind = render(collector.collect()).encode(), 200, CONTENT_TYPE
            elif path in ("/", "/healthcheck"):
                body, status, kind = b"agent-turbo metrics: /metrics\n", 200, "text/plain"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    from celeryapp.config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m celeryapp.monitoring.metrics", description=__doc__
                                     .split("\n\n")[0])
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
    if args.once:
        sys.stdout.write(render(collector.collect()))
        return 0
    server = make_server(collector, args.address, args.port)
    host, port = server.server_address[:2]
    print(f"agent-turbo metrics on http://{host}:{port}/metrics", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        collector.close()
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal as _signal

    _signal.signal(_signal.SIGTERM, _interrupt)  # a clean stop on TERM
    sys.exit(main())
