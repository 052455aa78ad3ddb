"""The lean ``turbo`` shell client: standard library only.

Every ``turbo`` call blocks the person or coding agent that runs it, and
importing Celery + redis-py costs half a second. This package talks to Redis
itself (:mod:`.resp`), writes Celery protocol-2 task messages exactly as kombu's
Redis transport stores them (:mod:`.messages`) and reads results straight from
the result backend. :mod:`.cli` is the entry point; :mod:`.args` the command
line, :mod:`.common` settings and clients, :mod:`.submitting` the submit
commands, :mod:`.entries` the stored state, :mod:`.reading` status, ls, result
and cancel, :mod:`.render` the output. Only ``turbo cancel`` and ``turbo submit
flow`` import the heavier modules, on demand.

Nothing here may import celery, kombu, redis or pydantic at module level;
``tests/unit/test_imports.py`` checks it.
"""
