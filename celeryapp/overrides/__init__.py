"""Everything that subclasses or patches Celery and kombu internals, and nothing else.

Tested against celery 5.7 and kombu 5.7 (the series ``pyproject.toml`` pins);
``tests/unit/test_private_names.py`` fails, naming the attribute, when one of the
private names below disappears from the installed versions.

* :mod:`.transport` - kombu's Redis ``Transport``/``Channel``/``QoS`` with one
  client per channel, ``BLMPOP`` batch fetch and acks sent together.
  kombu private names: ``Channel._brpop_start``, ``Channel._brpop_read``,
  ``Channel._brpop_sent_at``, ``Channel._flush_brpop_reauth``,
  ``Channel._create_shared_client`` (our own), ``Channel._queue_cycle``,
  ``Channel._q_for_pri``, ``Channel._tag_to_queue``, ``Channel._in_poll``,
  ``Channel._qos``, ``Connection._deliver``.
* :mod:`.backend` - Celery's ``RedisBackend`` storing each state with one Lua script.
  Celery private names: ``RedisBackend._get_client``, ``RedisBackend._get_pool``,
  ``BaseBackend._get_result_meta``, ``RedisBackend._MAX_STR_VALUE_SIZE``.
* :mod:`.consumer` - Celery's worker ``Consumer`` sending task events in batches
  (``Consumer._flush_events``).
* :mod:`.redaction` - ``AMQP``, ``Events``/``EventDispatcher``, ``Request`` and
  ``Task`` subclasses that mask secrets where Flower and ``inspect`` read task data
  (``AMQP._create_task_sender``).

``TURBO_STOCK_CELERY=1`` runs the app on stock kombu/Celery Redis classes instead
(no transport, backend or consumer override) - a switch for a user hit by a
regression in these.
"""
