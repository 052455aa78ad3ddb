"""Everything that subclasses or patches Celery and kombu internals, and nothing else.

Written and tested against celery 5.7.0, kombu 5.7.0 and redis-py 8.1.0 (Python
3.11); ``pyproject.toml`` pins celery and kombu to the 5.7 series. The names each
module relies on are listed below and, to be checked, in :data:`PRIVATE_NAMES`
(underscore names) and :data:`RELIED_PUBLIC_NAMES` (public names that are new in a
recent release or whose exact behaviour is relied on);
``tests/unit/test_private_names.py`` fails, naming the attribute, when one of them
is gone from the installed versions or no longer takes the arguments we pass.

* :mod:`.transport` - kombu's Redis ``Transport``/``Channel``/``QoS`` with one
  client per channel, ``BLMPOP`` batch fetch and acks sent together.
  kombu private names: ``Channel._brpop_start`` and ``Channel._brpop_read``
  (overridden, kombu's kept as the fallback), ``Channel._brpop_sent_at`` and
  ``Channel._in_poll`` (assigned; ``MultiChannelPoller`` reads them),
  ``Channel._flush_brpop_reauth``, ``Channel._queue_cycle`` (its ``consume``/
  ``rotate``), ``Channel._q_for_pri``, ``Channel._tag_to_queue`` and
  ``Channel._qos`` (kombu.transport.virtual), ``Transport._deliver``
  (``self.connection._deliver``) and ``Message._raw`` (kombu.transport.virtual);
  ``QoS._remove_from_indices`` and ``Channel._do_restore_message`` (a task requeued
  after its process died goes back to the head of its queue, counted);
  ``QoS._delivered`` and ``QoS._dirty`` (kombu.transport.virtual: what a channel holds,
  given back when it closes, and whether a worker cut off from Redis holds anything).
  Public but relied on: ``Channel.conn_or_acquire``/``Client``/``pool``/``client``/
  ``handlers``/``global_keyprefix``/``brpop_timeout``/``priority_steps``/``sep``/
  ``ResponseError``/``connection_errors``, ``QoS.unacked_key``/
  ``unacked_index_key``/``restore_unacked``/``reject``, ``virtual.QoS.append``/
  ``ack`` (called past kombu's Redis QoS)/``can_consume_max_estimate``,
  ``Transport.channels``/``register_with_event_loop``, ``Hub.on_tick``/
  ``call_later``; redis-py ``Redis(connection_pool=, single_connection_client=,
  credential_provider=)``, ``Redis.connection``/``parse_response``/
  ``register_script``, ``ConnectionPool.connection_kwargs``,
  ``Connection.send_command`` (no redis-py private name).
* :mod:`.backend` - Celery's ``RedisBackend`` storing each state with one Lua script.
  Celery private names: ``RedisBackend._create_client`` (overridden),
  ``RedisBackend._get_client``, ``RedisBackend._get_pool``,
  ``RedisBackend._MAX_STR_VALUE_SIZE``, ``RedisBackend._chord_part_return_script``/
  ``_chord_cleanup_script``/``_chord_claim_extend_script`` (cached per process,
  dropped after fork), ``Backend._get_result_meta`` (overridden: redaction),
  ``BaseKeyValueStoreBackend._store_result`` (overridden), ``AsyncResult._cache``.
  Public but relied on: ``RedisBackend.client`` (a cached property),
  ``on_task_call``, ``ensure``, ``failure_expires``,
  ``AsyncBackendMixin.add_pending_result(weak=, start_drainer=)``/``iter_native``,
  ``BaseResultConsumer.drainer``, ``ResultConsumer.on_wait_for_pending``,
  ``Backend.store_result``, ``BackendStoreError``.
* :mod:`.consumer` - Celery's worker ``Consumer`` sending task events in batches.
  Celery private name: ``Consumer._flush_events``. Public but relied on:
  ``Consumer.on_send_event_buffered`` (overridden), ``Consumer.hub``.
* :mod:`.redaction` - ``AMQP``, ``Events``/``EventDispatcher``, ``Request`` and
  ``Task`` subclasses that mask secrets where Flower and ``inspect`` read task data.
  Celery private name: ``AMQP._create_task_sender`` (overridden - not for
  redaction: it skips kombu's declare call for a queue already declared, which
  relies on kombu's ``_maybe_declare`` keying ``Connection.declared_entities`` by
  ``hash(entity)``). Public but relied on: ``AMQP.as_task_v2(argsrepr=,
  kwargsrepr=)``, ``AMQP.argsrepr_maxsize``/``kwargsrepr_maxsize``, the
  ``task_repr_maxlevels`` setting, ``saferepr(maxlevels=)``,
  ``Events.dispatcher_cls``, ``EventDispatcher.send``/``publish``,
  ``Request.info(safe=)``, ``Task.Request``, ``Producer.connection``.
* :mod:`.request` - the worker's ``Request``: a task whose pool process died is
  requeued (head of its queue, counted) at most ``TURBO_WORKER_LOST_REQUEUES`` times,
  then fails with ``TaskCrashed``. Public but relied on: ``Request.on_failure(
  send_failed_event=, return_ok=)``, ``Request.request_dict``,
  ``ExceptionWithTraceback.exc`` (billiard), ``QoS.restore_by_tag``.
* ``celeryapp/factory.py`` relies on ``BaseLoader.override_backends``,
  ``Celery(amqp=, events=, task_cls=)`` and the ``broker_transport``/
  ``worker_consumer`` settings; ``celeryapp/submit.py`` on ``Producer.batch`` and
  ``BatchPublishError`` (new in kombu 5.7) and ``Celery.producer_or_acquire``.

``TURBO_STOCK_CELERY=1`` runs the app on stock kombu/Celery Redis classes instead
(no transport, backend or consumer override) - a way out for a user hit by a
regression in these (:mod:`.stock`). Secrets stay masked: the redaction hooks stay
on, and the stock result backend is Celery's ``RedisBackend`` plus the stored-args
redaction, which needs ``Backend._get_result_meta``, and the recent list that
``turbo ls`` reads (:mod:`.stored`, shared with :mod:`.backend`); the stock AMQP
hook drops the declare shortcut.
"""
from __future__ import annotations

# Each row: (where, name, call). ``where`` is "module:Class" (or a module); ``call``
# is how the overrides call it: "*" one positional argument, "name" that keyword,
# "**" any further keywords; None for an attribute, property or one only assigned.
PRIVATE_NAMES = (
    # transport.py (kombu)
    ("kombu.transport.redis:Channel", "_brpop_start", ("*",)),
    ("kombu.transport.redis:Channel", "_brpop_read", ("**",)),
    ("kombu.transport.redis:Channel", "_brpop_sent_at", None),
    ("kombu.transport.redis:Channel", "_in_poll", None),
    ("kombu.transport.redis:Channel", "_flush_brpop_reauth", ()),
    ("kombu.transport.redis:Channel", "_queue_cycle", None),
    ("kombu.transport.redis:Channel", "_q_for_pri", ("*", "*")),
    ("kombu.transport.virtual:Channel", "_tag_to_queue", None),
    ("kombu.transport.virtual:Channel", "_qos", None),
    ("kombu.transport.virtual:Transport", "_deliver", ("*", "*")),
    ("kombu.transport.virtual:Message", "_raw", None),
    ("kombu.transport.redis:QoS", "_remove_from_indices", ("*", "*")),
    ("kombu.transport.redis:Channel", "_do_restore_message", ("*", "*", "*", "*", "*")),
    ("kombu.transport.virtual:QoS", "_delivered", None),
    ("kombu.transport.virtual:QoS", "_dirty", None),
    # backend.py (Celery)
    ("celery.backends.redis:RedisBackend", "_create_client", ("**",)),
    ("celery.backends.redis:RedisBackend", "_get_client", ()),
    ("celery.backends.redis:RedisBackend", "_get_pool", ("**",)),
    ("celery.backends.redis:RedisBackend", "_MAX_STR_VALUE_SIZE", None),
    ("celery.backends.redis:RedisBackend", "_chord_part_return_script", None),
    ("celery.backends.redis:RedisBackend", "_chord_cleanup_script", None),
    ("celery.backends.redis:RedisBackend", "_chord_claim_extend_script", None),
    ("celery.backends.base:Backend", "_get_result_meta", ("result", "state", "traceback",
                                                          "request")),
    ("celery.backends.base:BaseKeyValueStoreBackend", "_store_result",
     ("*", "*", "*", "*", "request")),
    ("celery.result:AsyncResult", "_cache", None),
    # consumer.py (Celery)
    ("celery.worker.consumer:Consumer", "_flush_events", ()),
    # redaction.py (Celery; kombu's declaration cache that its shortcut mirrors)
    ("celery.app.amqp:AMQP", "_create_task_sender", ()),
    ("kombu.common", "_maybe_declare", ("*", "*")),
)

RELIED_PUBLIC_NAMES = (
    # transport.py
    ("kombu.transport.redis:Channel", "conn_or_acquire", ("*",)),
    ("kombu.transport.redis:Channel", "Client", None),
    ("kombu.transport.redis:Channel", "pool", None),
    ("kombu.transport.redis:Channel", "client", None),
    ("kombu.transport.redis:Channel", "handlers", None),
    ("kombu.transport.redis:Channel", "global_keyprefix", None),
    ("kombu.transport.redis:Channel", "brpop_timeout", None),
    ("kombu.transport.redis:Channel", "priority_steps", None),
    ("kombu.transport.redis:Channel", "active_queues", None),
    ("kombu.transport.redis:Channel", "sep", None),
    ("kombu.transport.redis:Channel", "ResponseError", None),
    ("kombu.transport.redis:Channel", "connection_errors", None),
    ("kombu.transport.redis:Channel", "basic_consume", ("*", "*", "**")),
    ("kombu.transport.redis:Channel", "basic_cancel", ("*",)),
    ("kombu.transport.virtual:Channel", "qos", None),
    ("kombu.transport.redis:QoS", "unacked_key", None),
    ("kombu.transport.redis:QoS", "unacked_index_key", None),
    ("kombu.transport.redis:QoS", "restore_unacked", ("*",)),
    ("kombu.transport.redis:QoS", "reject", ("*", "requeue")),
    ("kombu.transport.redis:QoS", "restore_by_tag", ("*", "*", "*")),
    ("kombu.transport.redis:QoS", "restore_visible", ("*", "*", "*")),
    ("celery.worker.state", "active_requests", None),
    ("celery.worker.request:Request", "message", None),
    ("kombu.transport.virtual:Channel", "closed", None),
    # request.py
    ("celery.worker.request:Request", "request_dict", None),
    ("celery.worker.request:Request", "on_failure", ("*", "send_failed_event", "return_ok")),
    ("billiard.einfo:ExceptionWithTraceback", "exc", None),
    ("kombu.transport.virtual:QoS", "append", ("*", "*")),
    ("kombu.transport.virtual:QoS", "ack", ("*",)),
    ("kombu.transport.virtual:QoS", "can_consume_max_estimate", ()),
    ("kombu.transport.virtual:Transport", "channels", None),
    ("kombu.transport.redis:Transport", "register_with_event_loop", ("*", "*")),
    ("kombu.asynchronous.hub:Hub", "on_tick", None),
    ("kombu.asynchronous.hub:Hub", "call_later", ("*", "*")),
    ("kombu.utils.scheduling:priority_cycle", "consume", ("*",)),
    ("kombu.utils.scheduling:priority_cycle", "rotate", ("*",)),
    ("redis:Redis", "__init__", ("connection_pool", "single_connection_client",
                                 "credential_provider")),
    ("redis:Redis", "connection", None),
    ("redis:Redis", "parse_response", ("*", "*", "**")),
    ("redis:Redis", "register_script", ("*",)),
    ("redis.connection:ConnectionPool", "connection_kwargs", None),
    ("redis.connection:Connection", "send_command", ("*", "*", "*")),
    # backend.py
    ("celery.backends.redis:RedisBackend", "client", None),
    ("celery.backends.redis:RedisBackend", "on_task_call", ("*", "*")),
    ("celery.backends.redis:RedisBackend", "ensure", ("*", "*")),
    ("celery.backends.redis:RedisBackend", "failure_expires", None),
    ("celery.backends.asynchronous:AsyncBackendMixin", "add_pending_result",
     ("*", "weak", "start_drainer")),
    ("celery.backends.asynchronous:AsyncBackendMixin", "iter_native", ("*", "no_ack", "**")),
    ("celery.backends.asynchronous:BaseResultConsumer", "drainer", None),
    ("celery.backends.redis:ResultConsumer", "on_wait_for_pending", ("*", "**")),
    ("celery.backends.base:Backend", "store_result", ("*", "*", "*", "traceback", "request",
                                                      "**")),
    ("celery.backends.base", "BackendStoreError", None),
    # consumer.py
    ("celery.worker.consumer:Consumer", "on_send_event_buffered", ()),
    ("celery.worker.consumer:Consumer", "hub", None),
    # redaction.py
    ("celery.app.amqp:AMQP", "as_task_v2", ("*", "*", "*", "*", "argsrepr", "kwargsrepr",
                                            "**")),
    ("celery.app.amqp:AMQP", "argsrepr_maxsize", None),
    ("celery.app.amqp:AMQP", "kwargsrepr_maxsize", None),
    ("celery.app.defaults:DEFAULTS", "task_repr_maxlevels", None),
    ("celery.utils.saferepr", "saferepr", ("*", "*", "maxlevels")),
    ("celery.app.events:Events", "dispatcher_cls", None),
    ("celery.events.dispatcher:EventDispatcher", "send",
     ("*", "blind", "utcoffset", "retry", "retry_policy", "Event", "**")),
    ("celery.events.dispatcher:EventDispatcher", "publish",
     ("*", "*", "*", "blind", "Event", "**")),
    ("celery.worker.request:Request", "info", ("safe",)),
    ("celery.app.task:Task", "Request", None),
    ("kombu.connection:Connection", "declared_entities", None),
    ("kombu.messaging:Producer", "connection", None),
    # factory.py and submit.py
    ("celery.loaders.base:BaseLoader", "override_backends", None),
    ("celery.app.base:Celery", "__init__", ("*", "amqp", "events", "task_cls")),
    ("celery.app.defaults:DEFAULTS", "broker_transport", None),
    ("celery.app.defaults:DEFAULTS", "worker_consumer", None),
    ("celery.app.base:Celery", "producer_or_acquire", ()),
    ("kombu.messaging:Producer", "batch", ("*",)),
    ("kombu.exceptions", "BatchPublishError", None),
)

# Overridden private hooks and the Celery/kombu code that must still call them (a
# hook nobody calls any more fails silently): (caller "module:Qualified.name", name).
CALLED_BY = (
    ("kombu.transport.redis:MultiChannelPoller._register_BRPOP", "_brpop_start"),
    ("kombu.transport.redis:MultiChannelPoller.maybe_check_brpop_health", "_brpop_sent_at"),
    ("kombu.transport.redis:Channel.__init__", "_brpop_read"),
    ("celery.backends.redis:RedisBackend.client", "_create_client"),
    ("celery.backends.base:Backend.store_result", "_store_result"),
    ("celery.backends.base:BaseKeyValueStoreBackend._store_result", "_get_result_meta"),
    ("celery.app.amqp:AMQP.send_task_message", "_create_task_sender"),
    ("celery.worker.consumer.events:Events.start", "on_send_event_buffered"),
    ("celery.app.events:Events.Dispatcher", "dispatcher_cls"),
    ("celery.app.backends:by_name", "override_backends"),
)

# Our own names on subclasses: none may exist on the base class, or we would shadow it.
OWN_NAMES = (
    *(("kombu.transport.redis:QoS", name) for name in (
        "_recorded", "_pending_acks", "_script", "_write_records", "_forget",
        "record_batch", "flush_acks", "_holder", "_visibility_sweep", "_started_holder",
        "_holder_client")),
    *(("kombu.transport.redis:Channel", name) for name in (
        "_shared_client", "_shared_pid", "_scripts_client", "_scripts", "_batch_fetch",
        "_create_shared_client", "_uses_batch_fetch", "_fetch_count", "_no_ack_queues",
        "_deliver_batch", "run_script", "defers_acks")),
    ("kombu.transport.redis:Transport", "loop_thread"),
    ("kombu.transport.redis:Transport", "_flush_acks"),
    ("celery.backends.redis:RedisBackend", "_store_script"),
    ("celery.backends.redis:RedisBackend", "_run_store_script"),
    ("celery.worker.consumer:Consumer", "_event_flush_timer"),
    ("celery.worker.consumer:Consumer", "_event_flush_delay"),
    ("celery.worker.consumer:Consumer", "_flush_buffered_events"),
)
