"""Test harness: a private redis-server (random port, password, own config) and
real ``celery worker`` processes. Never the machine's Redis, never eager mode.

``pytest_configure`` sets the test environment (the server's URL among it) before
any test module imports ``celeryapp.app``; the server itself starts with the first
integration or system test (their conftest asks for it), so ``tests/unit`` runs
without one.

Under pytest-xdist (``make test`` runs ``-n``) every xdist worker is a process of its own
with its own temp dir, redis-server, environment and shared Celery worker: nothing is
shared between them but the machine. Tests marked ``serial`` (timing-bound fault tests:
heartbeats, leases, kills) are left out of the parallel run and run afterwards on their
own (``make test`` does both: tests/suite.py).

Layout: ``unit/`` (no Redis, no workers), ``integration/`` (real Redis, real workers),
``system/`` (network namespaces, deploy files, a browser), ``support/`` (helpers, fakes,
the namespace harness).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest

from celeryapp.dev.localredis import LocalRedis

ROOT = Path(__file__).resolve().parents[1]
FAKES = ROOT / "tests" / "support" / "fakes"
STATE: dict = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "serial: timing-bound (heartbeats, leases, kills): run alone, never "
                   "beside other tests (make test runs them after the parallel part)")
    if _xdist_controller(config):  # runs no test: its workers set up their own
        return
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    base = Path(tempfile.mkdtemp(prefix=f"turbo-tests-{worker}-"))
    password = secrets.token_hex(12)
    redis = LocalRedis(workdir=base / "redis", password=password)  # started on first use
    STATE.update(base=base, redis=redis, redis_started=False)
    env = {
        "TURBO_BROKER_URL": f"{redis.url}/0",
        "TURBO_RESULT_BACKEND": f"{redis.url}/1",
        "TURBO_RESULTS_DIR": str(base / "results"),
        "TURBO_AGENT_SLOTS_DIR": str(base / "agent-slots"),
        "TURBO_AGENT_SCRATCH_DIR": str(base / "agent-runs"),
        # the tests' own directories (tmp_path) may be an agent's cwd
        "TURBO_AGENT_CWD_ROOTS": tempfile.gettempdir(),
        "TURBO_CLAUDE_BIN": str(FAKES / "claude"),
        "TURBO_RETRY_BACKOFF": "0.2",
        "TURBO_RETRY_BACKOFF_MAX": "1",
        "TURBO_TIME_LIMIT_GRACE": "3",
        "TURBO_DUCKDB_PATH": str(base / "sample.duckdb"),
    }
    os.environ.update(env)
    for leaked in ("DATABRICKS_SERVER_HOSTNAME", "DATABRICKS_HTTP_PATH", "DATABRICKS_TOKEN"):
        os.environ.pop(leaked, None)
    STATE["env"] = env
    make_sample_db(Path(env["TURBO_DUCKDB_PATH"]))


def _xdist_controller(config) -> bool:
    return (not hasattr(config, "workerinput")
            and getattr(config.option, "numprocesses", None) not in (None, 0))


def pytest_unconfigure(config):
    redis = STATE.get("redis")
    if redis and STATE.get("redis_started"):
        redis.stop()
    base = STATE.get("base")
    if base and not os.environ.get("TURBO_KEEP_TEST_DIR"):
        shutil.rmtree(base, ignore_errors=True)


def make_sample_db(path: Path) -> None:
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute("""
            CREATE TABLE orders AS
            SELECT i AS id, DATE '2026-11-01' + (i % 30)::INT AS day,
                   (i % 97)::DECIMAL(10,2) + 0.5 AS amount, 'c' || (i % 50) AS customer
            FROM range(5000) t(i)
        """)


_KEPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


@pytest.fixture(autouse=True)
def _signal_dispositions_kept(request):
    """A test that leaves this process's signal handling changed (Celery or billiard code
    run in-process ignores SIGINT, say) would change every later test of this xdist
    worker, and every child they start: restored here, with a warning naming the test."""
    before = {sig: signal.getsignal(sig) for sig in _KEPT_SIGNALS}
    yield
    for sig, handler in before.items():
        now = signal.getsignal(sig)
        if now is not handler and now != handler:
            warnings.warn(f"{request.node.nodeid} left {sig.name} handled by {now!r}; "
                          f"restored {handler!r}", stacklevel=1)
            signal.signal(sig, handler)


@pytest.fixture(scope="session")
def test_env() -> dict:
    return dict(STATE["env"])


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return STATE["base"]


@pytest.fixture(scope="session")
def redis_server() -> LocalRedis:
    """The private redis-server, started on first use (integration and system tests)."""
    if not STATE["redis_started"]:
        STATE["redis"].start()
        STATE["redis_started"] = True
    return STATE["redis"]


@pytest.fixture(scope="session")
def celery_app(redis_server):
    from celeryapp import app

    return app


@pytest.fixture(scope="session")
def broker_client(celery_app):
    """redis-py on the broker's database (queues), for looking at messages directly."""
    import redis

    client = redis.Redis.from_url(os.environ["TURBO_BROKER_URL"])
    yield client
    client.close()


@pytest.fixture
def scratch_name(broker_client):
    """A unique name for queues no worker consumes; every broker key holding it is
    deleted afterwards."""
    name = f"scratch-{uuid.uuid4().hex[:8]}"
    yield name
    for key in list(broker_client.scan_iter(match=f"*{name}*")):
        broker_client.delete(key)


@pytest.fixture
def start_worker(celery_app, base_dir, request):
    """Factory: start a real worker with extra env; stopped after the test."""
    from celeryapp.dev.localworker import WorkerProcess

    started: list[WorkerProcess] = []

    def start(host: str | None = None, *, queues="queries,agents,default", concurrency=2,
              env: dict | None = None, **kwargs) -> WorkerProcess:
        host = host or f"t{uuid.uuid4().hex[:6]}"
        logdir = base_dir / "logs"
        logdir.mkdir(exist_ok=True)
        worker = WorkerProcess(
            name=f"worker@{host}", queues=queues, concurrency=concurrency,
            env=env or {}, logfile=logdir / f"{request.node.name[:60]}-{host}.log", **kwargs)
        started.append(worker)
        return worker.start(celery_app)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def shared_worker(celery_app, base_dir):
    """One worker on every queue for tests that do not change worker settings."""
    from celeryapp.dev.localworker import WorkerProcess

    (base_dir / "logs").mkdir(exist_ok=True)
    worker = WorkerProcess(name="worker@shared", concurrency=2,
                           logfile=base_dir / "logs" / "shared.log").start(celery_app)
    yield worker
    worker.stop()
