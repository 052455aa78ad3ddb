"""Flower as the project runs it: login required, open /metrics and /healthcheck,
persistent state saved on an interval, secrets masked in what Flower shows.

Real Flower processes (through ``python -m celeryapp.monitoring.flower`` or the plain
``celery -A celeryapp flower``) against the test Redis and real workers.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from celeryapp.core.redaction import (
    MASK,
    format_flower_task,
    is_secret_name,
    redact,
    redact_event_fields,
    redact_text,
)
from celeryapp.dev.localflower import FlowerProcess
from celeryapp.dev.localredis import free_port
from celeryapp.monitoring.flower import CONFIG_FILE, FlowerConfigError, flower_options
from support.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
USER = "ops"
SECRET_SQL = ("SELECT 'password=hunter2' AS note, 'dapi0123456789abcdef0123456789abcdef' AS tok, "
              "count(*) AS n FROM orders")
LEAKS = ("hunter2", "dapi0123456789abcdef")


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FLOWER_", "TURBO_FLOWER_"))}
    env.update(extra)
    return env


def run_flower_cli(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture
def new_flower(base_dir, tmp_path, request):
    """Factory: a FlowerProcess on a free port with its own state db; stopped after."""
    started: list[FlowerProcess] = []

    def start(user: str | None = USER, password: str | None = None, *, env=None,
              launcher=True, db: Path | None = None, ready: bool = True,
              **kwargs) -> FlowerProcess:
        logdir = base_dir / "logs"
        logdir.mkdir(exist_ok=True)
        password = password if password is not None else (
            secrets.token_urlsafe(12) if user else None)
        flower = FlowerProcess(
            port=free_port(), user=user, password=password, launcher=launcher,
            env={"TURBO_FLOWER_DB": str(db or tmp_path / "flower" / "flower.db"), **(env or {})},
            logfile=logdir / f"flower-{request.node.name[:50]}-{len(started)}.log", **kwargs)
        started.append(flower)
        return flower.start() if ready else flower.launch()

    yield start
    for flower in started:
        flower.stop()


@pytest.fixture(scope="module")
def flower(base_dir, shared_worker, tmp_path_factory):
    """One Flower with a login and a state file saved every 300 ms."""
    state = tmp_path_factory.mktemp("flower-state")
    flower = FlowerProcess(
        port=free_port(), user=USER, password=secrets.token_urlsafe(12),
        env={"TURBO_FLOWER_DB": str(state / "flower.db"),
             "TURBO_FLOWER_STATE_SAVE_INTERVAL": "300"},
        logfile=base_dir / "logs" / "flower-module.log").start()
    flower.state_dir = state
    wait_events(flower, shared_worker.name)
    yield flower
    flower.stop()


def wait_events(flower: FlowerProcess, worker: str, timeout: float = 30) -> None:
    """Flower answers HTTP before its event receiver listens: wait until a worker's
    heartbeat came through (events sent before that are lost to this Flower)."""
    def seen():
        status, body = flower.get("/workers?json=1")
        return status == 200 and any(w.get("hostname") == worker
                                     for w in json.loads(body)["data"])
    wait_for(seen, timeout, f"{worker}'s events in Flower")


def task_info(flower: FlowerProcess, task_id: str) -> dict:
    """The task as Flower knows it; {} while no event of it has arrived (404)."""
    status, body = flower.get(f"/api/task/info/{task_id}")
    return json.loads(body) if status == 200 else {}


def task_state(flower: FlowerProcess, task_id: str) -> str | None:
    return task_info(flower, task_id).get("state")


def api_json(flower: FlowerProcess, path: str):
    status, body = flower.get(path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


# --- refusing to start ------------------------------------------------------------------
def test_launcher_refuses_without_credentials():
    done = run_flower_cli([sys.executable, "-m", "celeryapp.monitoring.flower"], clean_env())
    assert done.returncode == 2, done
    assert "TURBO_FLOWER_USER" in done.stderr and "TURBO_FLOWER_PASSWORD" in done.stderr
    assert "TURBO_FLOWER_DEV=1" in done.stderr


def test_plain_celery_flower_refuses_without_credentials():
    """`celery -A celeryapp flower` loads the project's config file and refuses too."""
    done = run_flower_cli([sys.executable, "-m", "celery", "-A", "celeryapp", "flower",
                           f"--port={free_port()}"], clean_env())
    assert done.returncode == 2, done
    assert "TURBO_FLOWER_USER" in done.stderr


@pytest.mark.parametrize("args, env, message", [
    (["--basic-auth=ops:hunter2"], {"TURBO_FLOWER_DEV": "1"}, "readable by every user"),
    (["--basic_auth=ops:hunter2"], {"TURBO_FLOWER_USER": "a", "TURBO_FLOWER_PASSWORD": "b"},
     "readable by every user"),
    ([], {"TURBO_FLOWER_USER": "ops"}, "set both"),
    ([], {"TURBO_FLOWER_PASSWORD": "pw"}, "set both"),
    ([], {"TURBO_FLOWER_USER": "a:b", "TURBO_FLOWER_PASSWORD": "pw"}, "must not contain"),
    ([], {"TURBO_FLOWER_DEV": "1", "TURBO_FLOWER_ADDRESS": "0.0.0.0"}, "loopback"),
    (["--address=0.0.0.0"], {"TURBO_FLOWER_DEV": "1"}, "loopback"),
    (["--conf=/tmp/other.py"], {"TURBO_FLOWER_DEV": "1"}, "always uses"),
])
def test_launcher_refuses_unsafe_setups(args, env, message):
    done = run_flower_cli([sys.executable, "-m", "celeryapp.monitoring.flower", *args],
                          clean_env(**env))
    assert done.returncode == 2, done
    assert message in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_flower_options_precedence(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("FLOWER_", "TURBO_FLOWER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TURBO_FLOWER_USER", USER)
    monkeypatch.setenv("TURBO_FLOWER_PASSWORD", "pw")
    monkeypatch.setenv("TURBO_FLOWER_DB", str(tmp_path / "s" / "flower.db"))
    opts = flower_options()
    assert opts["basic_auth"] == [f"{USER}:pw"]
    assert (opts["port"], opts["address"], opts["max_tasks"]) == (5555, "127.0.0.1", 10000)
    assert opts["persistent"] is True and opts["state_save_interval"] == 60000
    assert opts["db"] == str(tmp_path / "s" / "flower.db") and (tmp_path / "s").is_dir()
    assert opts["format_task"] is format_flower_task
    # Flower's own variables win: the config file leaves those options alone
    monkeypatch.setenv("FLOWER_PORT", "6000")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "x:y")
    opts = flower_options()
    assert "port" not in opts and "basic_auth" not in opts
    monkeypatch.delenv("TURBO_FLOWER_USER")
    monkeypatch.delenv("TURBO_FLOWER_PASSWORD")
    assert "basic_auth" not in flower_options()  # FLOWER_BASIC_AUTH alone is a login
    monkeypatch.delenv("FLOWER_BASIC_AUTH")
    with pytest.raises(FlowerConfigError, match="needs a login"):
        flower_options()


def test_flowerconfig_is_inert_when_imported():
    import importlib

    module = importlib.import_module("celeryapp.monitoring.flowerconfig")
    assert Path(module.__file__).resolve() == CONFIG_FILE
    assert not hasattr(module, "basic_auth")


# --- running -----------------------------------------------------------------------------
def test_login_required_and_api_lists_worker(flower, shared_worker, redis_server):
    for path in ("/api/workers", "/api/tasks", "/workers", "/tasks", "/broker"):
        status, _ = flower.get(path, auth=False)
        assert status == 401, path
    wrong = FlowerProcess(port=flower.port, user=USER, password="wrong")
    assert wrong.get("/api/workers")[0] == 401
    workers = wait_for(
        lambda: (lambda w: w if shared_worker.name in w else None)(
            api_json(flower, "/api/workers?refresh=1")),
        30, "worker@shared in /api/workers")
    assert shared_worker.name in workers
    # the worker page (stats, conf, queues) and the API never show the Redis password
    status, page = flower.get(f"/worker/{shared_worker.name}")
    assert status == 200 and shared_worker.name.encode() in page
    for text in (json.dumps(workers).encode(), page):
        assert redis_server.password.encode() not in text
    # the password is in no process' command line
    cmdline = Path(f"/proc/{flower.process.pid}/cmdline").read_bytes()
    assert flower.password.encode() not in cmdline
    assert b"--conf=" + str(CONFIG_FILE).encode() in cmdline


def test_metrics_and_healthcheck_open(flower):
    status, body = flower.get("/healthcheck", auth=False)
    assert (status, body) == (200, b"OK")
    status, body = flower.get("/metrics", auth=False)
    assert status == 200
    assert b"flower_events_total" in body or b"# HELP" in body


def test_ready_flower_sees_the_very_next_task(new_flower, celery_app, shared_worker):
    """Once started, Flower misses nothing: wait_ready also waits for its event receiver
    (its named Redis connection subscribed), not only for /healthcheck."""
    from celeryapp.monitoring.flower import client_name, events_subscribed
    from tasks.query import run_query

    flower = new_flower()
    assert events_subscribed(celery_app, flower.process.pid)
    names = [c.get("name") for c in celery_app.backend.client.client_list()]
    assert client_name(flower.process.pid) in names
    assert not events_subscribed(celery_app, os.getpid())  # nobody else goes by Flower's name
    result = run_query.delay("SELECT 7 AS n")
    result.get(timeout=60)
    wait_for(lambda: task_state(flower, result.id) == "SUCCESS", 15, "the task in Flower")


def health_flower(*args: str) -> subprocess.CompletedProcess:
    return run_flower_cli([sys.executable, "-m", "celeryapp.monitoring.health", "flower", *args],
                          clean_env(), timeout=90)


def test_health_check_waits_for_flower_to_receive_events(new_flower):
    """The compose healthcheck / systemd ExecStartPost: ready only when Flower answers
    HTTP and its event receiver subscribed; --wait rides out the start."""
    flower = new_flower(ready=False)
    done = health_flower("--url", f"{flower.url}/healthcheck", "--pid", str(flower.process.pid),
                         "--wait", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"receives task events (pid {flower.process.pid})" in done.stdout
    found = health_flower("--url", f"{flower.url}/healthcheck")  # the pid found on this host
    assert found.returncode == 0, found.stdout + found.stderr


def test_health_check_fails_when_flower_does_not_listen(flower):
    # Flower's HTTP answers, but the pid given has no subscribed connection
    done = health_flower("--url", f"{flower.url}/healthcheck", "--pid", str(os.getpid()))
    assert done.returncode == 1
    assert f"has not subscribed to the task events yet (no subscribed turbo-flower-{os.getpid()}" \
        in done.stderr
    nothing = health_flower("--url", f"http://127.0.0.1:{free_port()}/healthcheck")
    assert nothing.returncode == 1 and "Flower does not answer at" in nothing.stderr


@pytest.mark.parametrize("argv, flower", [
    (["/v/bin/python", "-m", "celery", "-A", "celeryapp", "flower", "--conf=f.py"], True),
    (["/v/bin/celery", "-A", "celeryapp", "flower"], True),
    (["python", "-m", "celeryapp.monitoring.flower"], True),  # the launcher, before it execs
    (["python", "-m", "celeryapp.monitoring.health", "flower"], False),  # the check itself
    (["python", "-m", "celery", "-A", "celeryapp", "worker"], False),
    (["flower"], False),
])
def test_flower_processes_are_recognised(argv, flower):
    from celeryapp.monitoring.health import _is_flower

    assert _is_flower(argv) is flower


def test_state_saved_periodically(flower, celery_app, shared_worker, new_flower):
    """The state file appears after the save interval and survives a SIGKILL."""
    from tasks.query import run_query

    state = flower.state_dir
    wait_for(lambda: list(state.glob("flower.db*")), 10, "a state file under " + str(state))
    result = run_query.delay("SELECT 42 AS answer")
    result.get(timeout=60)
    wait_for(lambda: task_state(flower, result.id) == "SUCCESS", 30, "the task in Flower")
    # saved by the timer, not only on a clean stop: kill -9 a second Flower and restart it
    db = state / "second" / "flower.db"
    second = new_flower(db=db, env={"TURBO_FLOWER_STATE_SAVE_INTERVAL": "300"})
    wait_events(second, shared_worker.name)
    other = run_query.delay("SELECT 43 AS answer")
    other.get(timeout=60)
    wait_for(lambda: second.get(f"/api/task/info/{other.id}")[0] == 200, 30, "task in Flower 2")
    time.sleep(1.0)  # > 2 save intervals
    os.killpg(second.process.pid, signal.SIGKILL)
    second.process.wait(10)
    again = new_flower(user=second.user, password=second.password, db=db)
    info = json.loads(again.get(f"/api/task/info/{other.id}")[1])
    assert info["state"] == "SUCCESS" and info["name"] == "turbo.query"


def test_plain_celery_flower_uses_project_config(new_flower, tmp_path, shared_worker):
    """Plain `celery -A celeryapp flower` with FLOWER_BASIC_AUTH: our port, db, login."""
    db = tmp_path / "plain" / "flower.db"
    password = secrets.token_urlsafe(12)
    flower = new_flower(user=None, launcher=False, db=db,
                        env={"FLOWER_BASIC_AUTH": f"{USER}:{password}",
                             "TURBO_FLOWER_STATE_SAVE_INTERVAL": "300"})
    flower.user, flower.password = USER, password
    assert flower.get("/api/workers", auth=False)[0] == 401
    assert flower.get("/api/workers")[0] == 200
    wait_for(lambda: list(db.parent.glob("flower.db*")), 10, "state file of plain flower")
    assert b"--port" not in Path(f"/proc/{flower.process.pid}/cmdline").read_bytes()


def test_dev_mode_without_login_on_loopback(new_flower):
    flower = new_flower(user=None, env={"TURBO_FLOWER_DEV": "1"})
    assert flower.get("/workers")[0] == 200  # pages open
    assert flower.get("/api/workers")[0] == 401  # Flower keeps the API closed without a login
    assert "no login (TURBO_FLOWER_DEV=1)" in flower.log_tail()


# --- redaction ------------------------------------------------------------------------
def test_flower_never_shows_secrets(flower, celery_app, shared_worker):
    from tasks.query import run_query

    result = run_query.delay(SECRET_SQL)
    answer = result.get(timeout=60)
    # the caller gets the real data: redaction is for what monitoring shows
    assert answer["rows"] == [["password=hunter2", "dapi0123456789abcdef0123456789abcdef", 5000]]

    info = wait_for(lambda: (lambda i: i if i.get("state") == "SUCCESS" and i.get("result")
                             else None)(task_info(flower, result.id)),
                    30, "the finished task in Flower")
    listing = flower.get("/api/tasks?limit=1000")[1].decode()
    page = flower.get(f"/task/{result.id}")[1].decode()
    for text in (json.dumps(info), listing, page):
        for leak in LEAKS:
            assert leak not in text
    assert result.id in listing
    assert "password=***" in info["args"] and "dapi***" in info["args"]
    assert "FROM orders" in info["args"]
    assert "5000" in info["result"] and "'row_count': 1" in info["result"]
    assert "password=***" in info["result"]
    assert "turbo.query" in page and "FROM orders" in page and "password=***" in page
    # The one Flower endpoint that reads the result backend returns the caller's real
    # result (as AsyncResult.get does), behind the login: it is not a monitoring view.
    assert flower.get(f"/api/task/result/{result.id}", auth=False)[0] == 401
    raw = json.loads(flower.get(f"/api/task/result/{result.id}")[1])
    assert raw["result"]["rows"] == answer["rows"]


def test_failure_texts_are_redacted(flower, celery_app, shared_worker):
    """A failed query's exception and traceback (task-failed event) are masked too."""
    from tasks.errors import QueryError
    from tasks.query import run_query

    result = run_query.delay("SELECT * FROM missing_table WHERE secret = 'hunter2'")
    with pytest.raises(QueryError):
        result.get(timeout=60)
    info = wait_for(lambda: (lambda i: i if i.get("state") == "FAILURE" else None)(
        task_info(flower, result.id)), 30, "failure")
    text = json.dumps(info)
    assert "hunter2" not in text
    assert "missing_table" in text


@pytest.mark.parametrize("sql", [
    "SELECT CAST('password=hunter2' AS INTEGER)",
    "SELECT CAST('it''s password=''hunter2''' AS INTEGER)",  # reprs escape these quotes
])
def test_a_secret_echoed_in_an_error_reaches_only_the_caller(flower, celery_app, shared_worker,
                                                             sql):
    """The engine quotes the secret back in its error: the caller gets the real text;
    Flower (task page and API, from events) and the worker's log get it masked."""
    from tasks.errors import QueryError
    from tasks.query import run_query

    result = run_query.delay(sql)
    with pytest.raises(QueryError) as caught:
        result.get(timeout=60)
    assert "hunter2" in str(caught.value)
    info = wait_for(lambda: (lambda i: i if i.get("state") == "FAILURE" else None)(
        task_info(flower, result.id)), 30, "failure")
    page = flower.get(f"/task/{result.id}")[1].decode()
    for text in (json.dumps(info), page):
        assert "hunter2" not in text and "Conversion Error" in text
    log = wait_for(lambda: (lambda t: t if f"{result.id}] raised" in t else None)(
        shared_worker.log()), 15, "the failure in the worker's log")
    after = log.split(f"{result.id}] raised", 1)[1][:3000]
    assert "Conversion Error" in after and "hunter2" not in after


# --- redaction units ------------------------------------------------------------------
@pytest.mark.parametrize("text, leak, kept", [
    ("SELECT 'password=hunter2' FROM t", "hunter2", "password=***"),
    ("('SELECT \\'password=hunter2\\' AS n',)", "hunter2", "\\'password=***\\' AS n"),
    ("password=ab\\cd rest", "cd", "password=*** rest"),
    ("{'password': 'hunter2', 'max_tokens': 5}", "hunter2", "'max_tokens': 5"),
    ('{"api_key": "k-123456"}', "k-123456", '"api_key": "***"'),
    ("redis://:s3cr3t@redis-host:6379/0", "s3cr3t", "redis://:***@redis-host:6379/0"),
    ("https://alice:pw-xyz@example.com/repo", "pw-xyz", "https://alice:***@example.com"),
    ("Authorization: Bearer abcdef123456", "abcdef123456", "Authorization: Bearer ***"),
    ("curl -H 'Authorization: Basic dXNlcjpwdw=='", "dXNlcjpwdw", "Basic ***"),
    ("conn dapi0123456789abcdef0123456789abcdef-2 ok", "0123456789abcdef", "conn dapi*** ok"),
    ("ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKl", "AbCdEfGhIjKl", "ANTHROPIC_API_KEY=***"),
    ("key sk-ant-api03-AbCdEfGhIjKlMn done", "AbCdEfGhIjKl", "sk-ant-*** done"),
    ("use sk-proj-abcdefghijklmnopqrstu now", "abcdefghijklmnop", "sk-*** now"),
    ("AKIAIOSFODNN7EXAMPLE in the log", "IOSFODNN7EXAMPLE", "AKIA*** in the log"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI", "aws_secret_access_key=***"),
    ("PGPASSWORD=pg-pw psql", "pg-pw", "PGPASSWORD=*** psql"),
    ("run --password hunter2 --verbose", "hunter2", "--password *** --verbose"),
    ("WHERE token = 'abc def'", "abc def", "token = '***'"),
    # a repr that escaped its quotes, and a name that is the value of an earlier name
    ("""'x "y" password=\\'hunter2\\''""", "hunter2", "password=\\'***\\'"),
    ("SELECT 'it''s password=''hunter2''' AS x", "hunter2", "password=''***''"),
    ("""Exception("Binder Error: password = 's3cr3t' isn't valid")""", "s3cr3t",
     "Binder Error: password = '***' isn't"),
    ("git clone https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/x",
     "abcdefghijklmnopqrst", "https://***@github.com/x"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow",
     "PRIVATE KEY-----***"),
])
def test_redact_text(text, leak, kept):
    out = redact_text(text)
    assert leak not in out
    assert kept in out
    assert redact_text(out) == out  # idempotent


@pytest.mark.parametrize("text", [
    "SELECT day, sum(amount) FROM orders WHERE day >= ? GROUP BY day",
    "{'columns': ['n'], 'rows': [[5000]], 'row_count': 1, 'input_tokens': 12}",
    "ssh://git@github.com/org/repo.git and session_id=3f2a",
    "usage: output_tokens: 7, max_tokens=5",
])
def test_redact_text_keeps_ordinary_text(text):
    assert redact_text(text) == text


def test_redact_text_is_linear_on_hostile_input():
    """No pattern backtracks catastrophically (a repr is redacted on every publish)."""
    for unit in ("a.", "password='\\", 'token: "\\\'', "a://", "https://a:", "key=a.",
                 "--pass ", "x@y:z/", "Bearer ", "dapi0", "-----BEGIN PRIVATE KEY-----"):
        text = unit * (20000 // len(unit))
        started = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - started < 1.0, unit


def test_redact_limit_bounds_the_work():
    big = tuple(["SELECT 'password=hunter2' AS x " * 40] * 1000)
    started = time.perf_counter()
    out = redact(big, 1000)
    assert time.perf_counter() - started < 0.5
    assert "hunter2" not in out[0] and out[0].endswith("...") and out[-1] == "..."


def test_redact_structures_and_names():
    data = {"password": "x", "DATABRICKS_TOKEN": "dapi0123456789abcdef01",
            "nested": [{"apiKey": "k"}, ("Bearer abcdefghij",)],
            "max_tokens": 10, "token": None, "note": "redis://:pw@h:1/0"}
    out = redact(data)
    assert out == {"password": MASK, "DATABRICKS_TOKEN": MASK,
                   "nested": [{"apiKey": MASK}, ("Bearer ***",)],
                   "max_tokens": 10, "token": None, "note": "redis://:***@h:1/0"}
    assert data["password"] == "x"  # a copy
    assert all(map(is_secret_name, ["x-api-key", "accessToken", "client_secret", "AUTH"]))
    assert not any(map(is_secret_name, ["max_tokens", "author", "session_id", "keyword"]))


def test_format_task_and_event_fields():
    class Task:
        uuid = "t1"
        args = "('password=hunter2',)"
        kwargs = "{'api_key': 'zzz'}"
        result = "'sk-ant-api03-AbCdEfGhIjKl'"
        exception = None
        traceback = "Traceback: dapi0123456789abcdef0123"

    task = format_flower_task(Task())
    assert task.args == "('password=***',)" and task.kwargs == "{'api_key': '***'}"
    assert task.result == "'sk-ant-***'" and "dapi***" in task.traceback
    fields = {"uuid": "u", "args": "('token=abc',)", "result": "1", "hostname": "w"}
    assert redact_event_fields(fields) == {**fields, "args": "('token=***',)"}


def test_message_headers_and_sent_event_are_redacted(celery_app):
    """RedactingAMQP: argsrepr/kwargsrepr and the task-sent event; the body is untouched."""
    from celeryapp.overrides.redaction import RedactingDispatcher

    assert issubclass(celery_app.events.Dispatcher, RedactingDispatcher)
    message = celery_app.amqp.create_task_message(
        str(uuid.uuid4()), "turbo.query", (SECRET_SQL,), {"params": {"password": "hunter2"}},
        create_sent_event=True)
    headers, _, body, sent = message
    shown = json.dumps([headers["argsrepr"], headers["kwargsrepr"], sent["args"], sent["kwargs"]])
    for leak in LEAKS:
        assert leak not in shown
    assert "FROM orders" in headers["argsrepr"] and "'password': '***'" in headers["kwargsrepr"]
    assert body[0] == (SECRET_SQL,) and body[1] == {"params": {"password": "hunter2"}}
    # a caller's own argsrepr is redacted as text
    message = celery_app.amqp.create_task_message(
        str(uuid.uuid4()), "turbo.query", ("x",), {}, argsrepr="('token=abc',)")
    assert message[0]["argsrepr"] == "('token=***',)"


def test_use_project_config_only_for_flower(monkeypatch):
    from celeryapp.monitoring import flower as flower_module

    monkeypatch.delenv("FLOWER_CONF", raising=False)
    flower_module.use_project_config()  # no click context: nothing
    assert "FLOWER_CONF" not in os.environ
    monkeypatch.setattr(flower_module, "_invoked_command", lambda: "worker")
    flower_module.use_project_config()
    assert "FLOWER_CONF" not in os.environ
    monkeypatch.setattr(flower_module, "_invoked_command", lambda: "flower")
    monkeypatch.setattr(sys, "argv", ["celery", "-A", "celeryapp", "flower"])
    flower_module.use_project_config()
    assert os.environ["FLOWER_CONF"] == str(CONFIG_FILE)
    monkeypatch.setenv("FLOWER_CONF", "/etc/mine.py")
    flower_module.use_project_config()
    assert os.environ["FLOWER_CONF"] == "/etc/mine.py"
