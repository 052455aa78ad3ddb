"""The lean ``turbo`` shell client: standard library only.

Every ``turbo`` call blocks the person or coding agent that runs it, and
importing Celery + redis-py costs half a second. This package talks to Redis
itself (:mod:`.resp`), writes Celery protocol-2 task messages exactly as kombu's
Redis transport stores them (:mod:`.messages`) and reads results straight from
the result backend (:mod:`.cli`). Only ``turbo cancel`` and ``turbo submit
flow`` import the heavier modules, on demand.

Nothing here may import celery, kombu, redis or pydantic at module level;
``tests/test_shell.py`` checks it.
"""
