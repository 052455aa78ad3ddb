"""Unit tests: no Redis, no subprocess, seconds for the lot (``make test-unit``)."""
