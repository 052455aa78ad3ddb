"""Unit tests: no Redis, no workers, seconds for the lot (``make test-unit``)."""
