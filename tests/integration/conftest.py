"""Integration tests (real Redis and real workers): the private redis-server runs for all
of them."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_redis(redis_server):
    return redis_server
