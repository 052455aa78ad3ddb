"""The Celery application: JSON only, acks late, Redis-safe timeouts, queues and routes.

Each workload has its own queue (the strong tool for ordering on Redis); within a
queue four named priorities map onto Redis priority steps.
"""
from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from .config import PRIORITIES, Settings, get_settings
from .core.names import DEFAULT_QUEUE, PRIORITY_STEPS, QUEUES, TASK_ROUTES
from .core.urls import is_redis
from .overrides import backend
from .overrides.stock import STOCK_AMQP, STOCK_BACKENDS

TRANSPORT = "celeryapp.overrides.transport:Transport"
CONSUMER = "celeryapp.overrides.consumer:Consumer"
AMQP = "celeryapp.overrides.redaction:RedactingAMQP"  # stock: STOCK_AMQP, redaction only
STOCK_CONSUMER = "celery.worker.consumer:Consumer"  # Celery's default worker_consumer


def task_queues() -> tuple[Queue, ...]:
    # x-max-priority only matters on AMQP brokers; Redis uses priority_steps.
    return tuple(
        Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-max-priority": 10})
        for name in QUEUES
    )


def celery_config(settings: Settings) -> dict:
    """Celery settings derived from ours; the README's "Reliability settings" says why.

    With ``stock_celery`` (TURBO_STOCK_CELERY): kombu's own Redis transport and
    Celery's own worker consumer (``create_app`` picks the result backend)."""
    overrides = not settings.stock_celery
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
        "sep": ":",
        "socket_keepalive": True,
        "health_check_interval": 10,
        # a message of a worker that died comes back one visibility timeout later:
        # scan for such messages every interval (kombu's default is ~100 s)
        "unacked_restore_interval": settings.unacked_restore_interval,
        "unacked_restore_throttle": 1,
        # a worker whose heartbeat is gone this long: its messages are taken back
        # (celeryapp/core/holders.py); the visibility timeout is only a backstop
        "dead_worker_timeout": settings.dead_worker_timeout,
    }
    ssl_options = settings.redis_ssl_options()
    redis_broker = is_redis(settings.broker)
    return {
        "broker_url": settings.broker,
        # same URLs, kombu's Redis transport minus a client object per publish
        "broker_transport": TRANSPORT if redis_broker and overrides else None,
        "result_backend": settings.backend,
        # never pickle: a pickled message is refused by the worker
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # a task is acked when it ends, requeued if its process dies
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
        "broker_use_ssl": ssl_options,
        "redis_backend_use_ssl": ssl_options,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "task_track_started": True,
        # a task-sent event doubles the cost of every delay(); Flower shows a task
        # from its task-received event on, which is enough
        "task_send_sent_event": settings.send_sent_event,
        "worker_send_task_events": True,
        # task events leave in batches of up to 24 per message, at most this late
        # (stock: Celery's, which flushes on the loop's next turn; the delay is unused)
        "worker_consumer": CONSUMER if overrides else STOCK_CONSUMER,
        "turbo_event_flush_delay": settings.event_flush_delay,
        "turbo_stock_celery": settings.stock_celery,  # shown by `celery inspect conf`
        "broker_connection_retry_on_startup": True,
        # with our transport a task running when Redis goes away runs on and acks when it
        # ends (core/holders.py; a worker cut off past its lease stops); kombu's own restores
        # every unacked message when the connection closes, so Celery must cancel them
        "worker_cancel_long_running_tasks_on_connection_loss": not overrides,
        "task_queues": task_queues(),
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": DEFAULT_QUEUE,
        "task_default_routing_key": DEFAULT_QUEUE,
        # by task name; TurboTask.apply_async (the request policy) also sends a query on
        # a remote engine to `warehouse` and host-pinned work to the right worker
        "task_routes": TASK_ROUTES,
        "task_default_priority": PRIORITIES[settings.default_priority],
        "task_queue_max_priority": 10,
        "task_inherit_parent_priority": True,
        "worker_hijack_root_logger": True,
        "enable_utc": True,
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    stock = settings.stock_celery  # TURBO_STOCK_CELERY: no transport/backend/consumer override
    app = Celery(
        "agent_turbo",
        include=["tasks.query", "tasks.agent", "tasks.flow", "tasks.notify", "tasks.health",
                 "tasks.hooks"],
        # secrets masked wherever Flower and inspect get task data from (in both modes)
        amqp=STOCK_AMQP if stock else AMQP,                      # argsrepr/kwargsrepr, task-sent
        # result/traceback texts in task events
        events="celeryapp.overrides.redaction:RedactingEvents",
        # plain @app.task: inspect replies redacted, each delivery checked (worker/delivery.py)
        task_cls="celeryapp.worker.delivery:CheckedTask",
    )
    app.conf.update(celery_config(settings))
    # redis:// and rediss:// results: overrides/backend.py, or (stock) Celery's own plus
    # redaction of the stored args and the recent list (overrides/stock.py)
    app.loader.override_backends = STOCK_BACKENDS if stock else backend.OVERRIDES
    return app


app = create_app()
