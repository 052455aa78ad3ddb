"""What every part of Agent Turbo shares, in the standard library only.

:mod:`.names` (tasks, queues, headers, Redis keys), :mod:`.policy` (what a caller may
ask: priorities, queues, timeouts, retries, notices), :mod:`.errors` (the error
hierarchy), :mod:`.redaction` (masking secrets), :mod:`.urls`, :mod:`.processes`.
The ``turbo`` shell client imports this package and nothing heavier, so nothing
here may import Celery, kombu, redis-py or pydantic (tests/unit checks it).
"""
