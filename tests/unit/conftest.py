"""Unit tests: no Redis and no Celery worker (``make test-unit``). Some run real processes
all the same - the agent runner with the fake CLIs, the real agent CLIs against API
stand-ins, the real Databricks connector against the warehouse stand-in - because what
they prove is how this code meets those programs; none of them needs the broker."""
