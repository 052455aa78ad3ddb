"""The core task path both ways: with celeryapp/overrides and on stock kombu/Celery.

Every case runs twice. "overrides" is the default app; "stock" is
``TURBO_STOCK_CELERY=1``: the worker gets it in its environment, and the client is
an app built with ``Settings(stock_celery=True)`` - kombu's own Redis transport,
Celery's own worker consumer and result backend (plus redaction and the recent
list). Each test has a worker of its own on a queue of its own, so the task runs
where the mode says. ``test_the_switch_switched`` watches the wire (MONITOR) to
show the worker really fetched and stored with the classes of its mode.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from contextlib import contextmanager

import pytest
from celery import chord, group

from celeryapp.core.names import RECENT_KEY
from celeryapp.submit import apply_group, registered
from support.helpers import unique_queue, wait_for
from tasks.errors import QueryError

WAIT = 60
# 10^12 rows: runs until cancelled (as in test_query_lifecycle.py)
ENDLESS = "SELECT sum((i * j) % 7) FROM range(1000000) a(i), range(1000000) b(j)"


@pytest.fixture(scope="module", params=["overrides", "stock"])
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def client_app(mode, celery_app):
    """The submitting side of ``mode``: an app built from the test environment."""
    from celeryapp.config import Settings
    from celeryapp.factory import create_app

    for module in ("tasks.query", "tasks.agent"):  # defined before the app is finalized,
        importlib.import_module(module)             # their tasks are its tasks too
    app = create_app(Settings(stock_celery=mode == "stock"))
    celery_app.set_current()  # Celery() made the new app current: the session's stays so
    yield app
    app.close()


def start_mode_worker(start_worker, mode: str, concurrency: int = 2):
    """A worker of ``mode`` alone on a new queue (``worker.queues``)."""
    return start_worker(queues=unique_queue(), concurrency=concurrency,
                        env={"TURBO_STOCK_CELERY": "1" if mode == "stock" else "0"})


@pytest.fixture
def worker(start_worker, mode):
    return start_mode_worker(start_worker, mode)


def query(app):
    return registered("turbo.query", app)


def test_query_returns_rows(client_app, worker):
    async_result = query(client_app).delay(
        "SELECT 40 + 2 AS answer, count(*) AS n FROM orders", queue=worker.queues)
    result = async_result.get(timeout=WAIT)
    assert result["rows"] == [[42, 5000]]
    assert result["worker"] == worker.name and result["attempts"] == 1
    # `turbo ls` lists it: both backends add the task to the recent list
    assert client_app.backend.client.zscore(RECENT_KEY, f"task:{async_result.id}") is not None


def test_failing_query_raises_query_error(client_app, worker):
    async_result = query(client_app).delay("SELECT * FROM missing_table", queue=worker.queues)
    with pytest.raises(QueryError, match="missing_table"):
        async_result.get(timeout=WAIT)
    meta = client_app.backend.get_task_meta(async_result.id)
    assert meta["status"] == "FAILURE" and meta["retries"] == 0


def test_stored_args_stay_redacted(client_app, worker):
    """Redaction is on in both modes: the task gets the real argument, the stored
    ``result_extended`` args do not keep it."""
    async_result = query(client_app).delay("SELECT ? AS v", params=["password=hunter2"],
                                           queue=worker.queues)
    assert async_result.get(timeout=WAIT)["rows"] == [["password=hunter2"]]
    key = client_app.backend.get_key_for_task(async_result.id)
    meta = json.loads(client_app.backend.client.get(key))
    assert "hunter2" not in json.dumps([meta["args"], meta["kwargs"]])
    assert meta["kwargs"]["params"]  # masked, not dropped


def test_agent_run_succeeds(client_app, worker):
    result = registered("turbo.agent", client_app).delay(
        "summarise the orders table", model="fake-sonnet", queue=worker.queues).get(timeout=WAIT)
    assert result["result"] == "fake claude (fake-sonnet): summarise the orders table"
    assert result["is_error"] is False and result["exit_code"] == 0
    assert result["worker"] == worker.name


def test_group_and_chord(client_app, worker):
    run = query(client_app)
    on_queue = {"queue": worker.queues}
    answers = group(run.s(f"SELECT {i} AS n").set(**on_queue)
                    for i in range(6)).apply_async().get(timeout=WAIT)
    assert [a["rows"] for a in answers] == [[[i]] for i in range(6)]
    header = group(run.s(f"SELECT {i} AS n").set(**on_queue) for i in range(4))
    body = run.si("SELECT 'joined' AS state").set(**on_queue)
    # through celeryapp.submit: kombu's Producer.batch on either transport
    result = apply_group(chord(header, body), app=client_app)
    assert result.get(timeout=WAIT)["rows"] == [["joined"]]


def wait_for_state(async_result, state: str, timeout: float = 30) -> None:
    wait_for(lambda: async_result.state == state, timeout, f"{async_result.id} {state}",
             interval=0.05)


def test_revoke_terminates_a_running_query(client_app, start_worker, mode):
    worker = start_mode_worker(start_worker, mode, concurrency=1)
    run = query(client_app)
    slow = run.delay(ENDLESS, timeout=600, queue=worker.queues)
    wait_for_state(slow, "STARTED")
    time.sleep(0.5)  # let the statement get going inside DuckDB
    revoked_at = time.monotonic()
    slow.revoke(terminate=True, signal="SIGUSR1")
    # one slot: the next query runs only because the statement really stopped
    assert run.delay("SELECT 8", queue=worker.queues).get(timeout=WAIT)["rows"] == [[8]]
    assert time.monotonic() - revoked_at < 20
    wait_for_state(slow, "REVOKED")


# --- the switch really switched --------------------------------------------------------
@contextmanager
def monitored(redis_client):
    """Every command Redis executes meanwhile (MONITOR), as redis-py parses them."""
    seen: list[dict] = []
    stop = threading.Event()
    monitor = redis_client.monitor()
    monitor.__enter__()

    def read():
        try:
            while not stop.is_set():
                seen.append(monitor.next_command())
        except Exception:  # noqa: BLE001
            return  # the connection closed under us: done

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield seen
    finally:
        stop.set()  # the idle workers' polls wake the reader within a second or so
        reader.join(5)
        monitor.__exit__(None, None, None)


def test_the_switch_switched(client_app, worker, mode, broker_client):
    from kombu.transport.redis import Transport as KombuTransport

    from celeryapp.overrides.backend import TurboRedisBackend
    from celeryapp.overrides.stock import StockRedisBackend
    from celeryapp.overrides.transport import Transport as TurboTransport

    stock = mode == "stock"
    # the client: its classes
    with client_app.connection_for_write() as conn:
        assert type(conn.transport) is (KombuTransport if stock else TurboTransport)
    assert type(client_app.backend) is (StockRedisBackend if stock else TurboRedisBackend)
    assert client_app.conf.worker_consumer == ("celery.worker.consumer:Consumer" if stock
                                               else "celeryapp.overrides.consumer:Consumer")
    # the worker: what it sends to Redis while it fetches and runs one query
    queue = worker.queues
    version = broker_client.info("server")["redis_version"]
    blmpop = tuple(int(n) for n in version.split(".")[:2]) >= (7, 0)  # else BRPOP both ways
    with monitored(broker_client) as seen:
        async_result = query(client_app).delay("SELECT 1 AS n", queue=queue)
        assert async_result.get(timeout=WAIT)["rows"] == [[1]]
        meta_key = client_app.backend.get_key_for_task(async_result.id).decode()
        wait_for(lambda: any(c["command"].startswith(("BRPOP", "BLMPOP")) and queue in c["command"]
                             for c in list(seen)), 15, "the worker's next fetch")
    commands = [(c["client_type"], c["command"]) for c in seen]
    fetches = {cmd.split(" ", 1)[0] for _, cmd in commands if f" {queue}" in cmd
               and cmd.startswith(("BRPOP", "BLMPOP"))}
    stores = {("lua" if kind == "lua" else "") + cmd.split(" ", 1)[0] for kind, cmd in commands
              if meta_key in cmd and cmd.split(" ", 1)[0] in ("SET", "SETEX", "EVALSHA")}
    if stock:
        # kombu's one-message BRPOP; Celery's GET, then SETEX+PUBLISH (no Lua)
        assert fetches == {"BRPOP"}, commands[-50:]
        assert "EVALSHA" not in stores and stores & {"SET", "SETEX"}, stores
    else:
        # the batch fetch (Redis >= 7) and the one-script store
        assert fetches == ({"BLMPOP"} if blmpop else {"BRPOP"}), commands[-50:]
        assert "EVALSHA" in stores and not stores & {"SET", "SETEX"}, stores
