"""The lean shell client's wire work against a real Redis (no worker): Celery messages equal
to Celery's own, priorities where Celery puts them, passwords, TLS, one round trip per
submit. What needs no Redis (its parser, JSON, RESP framing, URLs, exit codes) is in
tests/unit/test_shell_client.py and tests/unit/test_urls.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from celeryapp.core.names import PRIORITIES, host_queue
from celeryapp.dev.localredis import free_port
from celeryapp.shell import cli, messages, resp
from tasks.agent import run_agent
from tasks.query import run_query

BIN = Path(sys.executable).parent / "turbo"
TURBO = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "celeryapp.shell.cli"]


def turbo(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60):
    return subprocess.run([*TURBO, *args], env={**os.environ, **(env or {})}, input=input,
                          capture_output=True, text=True, timeout=timeout)


def _by_id(raw_messages) -> dict:
    decoded = [messages.decode(raw) for raw in raw_messages]
    return {m["headers"]["id"]: m for m in decoded}


def _without(mapping: dict, keys) -> dict:
    return {k: v for k, v in mapping.items() if k not in keys}


def _compare(ours: dict, theirs: dict) -> None:
    """Equal except what differs between any two sends (ids, origin, delivery tag)."""
    assert ours.keys() == theirs.keys()
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert theirs["headers"]["root_id"] == theirs["headers"]["id"]
    assert _without(ours["headers"], {"id", "root_id", "origin"}) == \
        _without(theirs["headers"], {"id", "root_id", "origin"})
    assert ours["headers"].keys() == theirs["headers"].keys()
    assert _without(ours["properties"], {"correlation_id", "reply_to", "delivery_tag"}) == \
        _without(theirs["properties"], {"correlation_id", "reply_to", "delivery_tag"})
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["body"] == theirs["body"]
    for key in ("content-type", "content-encoding"):
        assert ours[key] == theirs[key]


def test_query_message_equals_celerys(broker_client):
    queue = f"parity-{uuid.uuid4().hex[:8]}"
    theirs_id = run_query.apply_async(
        ("SELECT ? AS v",), {"params": [1, "x"], "engine": "duckdb", "timeout": 10,
                              "retries": 2, "max_inline_rows": 5},
        queue=queue, priority="high").id
    proc = turbo("submit", "query", "SELECT ? AS v", "--params", '[1, "x"]', "--engine",
                 "duckdb", "--timeout", "10", "--retries", "2", "--max-inline-rows", "5",
                 "--priority", "high", "--queue", queue)
    assert proc.returncode == 0, proc.stderr
    ours_id = proc.stdout.strip()
    assert proc.stdout == ours_id + "\n" and proc.stderr == ""
    stored = broker_client.lrange(f"{queue}:3", 0, -1)  # high = step 3
    assert broker_client.keys(f"{queue}*") == [f"{queue}:3".encode()]
    found = _by_id(stored)
    assert set(found) == {ours_id, theirs_id}
    ours, theirs = found[ours_id], found[theirs_id]
    _compare(ours, theirs)
    # time limits as TurboTask computes them: timelimit is [hard, soft]
    grace = float(os.environ["TURBO_TIME_LIMIT_GRACE"])
    assert ours["headers"]["timelimit"] == [10 + 2 * grace, 10 + grace]
    assert ours["properties"]["priority"] == PRIORITIES["high"]
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert ours["body"][0] == ["SELECT ? AS v"]


def test_task_sent_event_only_when_enabled_and_equal_to_celerys(broker_client, celery_app):
    queue = f"ev-{uuid.uuid4().hex[:8]}"
    db = broker_client.connection_pool.connection_kwargs.get("db", 0)
    events = broker_client.pubsub()
    events.subscribe(f"/{db}.celeryev/task.sent")
    events.get_message(timeout=1)  # the subscribe confirmation
    proc = turbo("submit", "query", "SELECT 1", "--queue", queue)  # default: no event
    assert proc.returncode == 0, proc.stderr
    previous = celery_app.conf.task_send_sent_event
    celery_app.conf.task_send_sent_event = True
    try:
        theirs_id = run_query.apply_async(("SELECT 1",), queue=queue).id
    finally:
        celery_app.conf.task_send_sent_event = previous
    proc = turbo("submit", "query", "SELECT 1", "--queue", queue,
                 env={"TURBO_SEND_SENT_EVENT": "true"})
    assert proc.returncode == 0, proc.stderr
    ours_id = proc.stdout.strip()
    sent = {}
    while True:
        message = events.get_message(timeout=2)
        if message is None:
            break
        if message["type"] == "message":
            event = messages.decode(message["data"])
            sent[event["body"]["uuid"]] = event
    events.close()
    assert set(sent) == {ours_id, theirs_id}
    volatile = {"uuid", "root_id", "hostname", "pid", "clock", "timestamp"}
    assert _without(sent[ours_id]["body"], volatile) == _without(sent[theirs_id]["body"], volatile)
    for part in ("properties", "headers"):
        assert sent[ours_id][part].keys() == sent[theirs_id][part].keys()
    assert sent[ours_id]["properties"]["delivery_info"] == \
        sent[theirs_id]["properties"]["delivery_info"]


def test_agent_message_equals_celerys_and_host_routes(broker_client):
    host = f"h{uuid.uuid4().hex[:6]}"
    queue = host_queue(host, "io")  # agent runs pinned to a host go to its io worker
    kwargs = {"profile": "claude", "model": "sonnet", "max_turns": 3,
              "allowed_tools": ["Read", "Grep"], "timeout": 60}
    theirs_id = run_agent.apply_async(("summarise it",), kwargs, queue=queue).id
    proc = turbo("submit", "agent", "-", "--profile", "claude", "--model", "sonnet",
                 "--max-turns", "3", "--allowed-tools", "Read, Grep", "--timeout", "60",
                 "--host", host, input="summarise it")
    assert proc.returncode == 0, proc.stderr
    found = _by_id(broker_client.lrange(f"{queue}:6", 0, -1))  # normal = step 6
    _compare(found[proc.stdout.strip()], found[theirs_id])
    # agent time limits come from the agent settings
    assert found[theirs_id]["headers"]["timelimit"][1] == 60 + float(
        os.environ["TURBO_TIME_LIMIT_GRACE"])


def test_every_priority_lands_where_celery_puts_it(broker_client):
    base = uuid.uuid4().hex[:8]
    celery_queue, lean_queue = f"pc-{base}", f"pl-{base}"
    for name in PRIORITIES:
        run_query.apply_async(("SELECT 1",), queue=celery_queue, priority=name)
        proc = turbo("submit", "query", "SELECT 1", "--queue", lean_queue, "--priority", name)
        assert proc.returncode == 0, proc.stderr
    proc = turbo("submit", "query", "SELECT 1", "--queue", lean_queue, "--priority", "4")
    assert proc.returncode == 0, proc.stderr
    run_query.apply_async(("SELECT 1",), queue=celery_queue, priority=4)

    def layout(queue):
        keys = {k.decode().replace(queue, "Q"): broker_client.llen(k)
                for k in broker_client.keys(f"{queue}*")}
        binding = {m.decode().replace(queue, "Q")
                   for m in broker_client.smembers(f"_kombu.binding.{queue}")}
        return keys, binding

    assert layout(lean_queue) == layout(celery_queue)
    assert layout(lean_queue)[0] == {"Q": 1, "Q:3": 2, "Q:6": 1, "Q:9": 1}
    for value in PRIORITIES.values():
        expected = lean_queue if value == 0 else f"{lean_queue}:{value}"
        assert messages.queue_key(lean_queue, value) == expected


def test_max_timeout_comes_from_the_environment(broker_client):
    queue = f"lim-{uuid.uuid4().hex[:8]}"
    env = {"TURBO_QUERY_MAX_TIMEOUT": "5", "TURBO_QUERY_TIMEOUT": "4"}
    refused = turbo("submit", "query", "SELECT 1", "--timeout", "6", "--queue", queue, env=env)
    assert refused.returncode == 2 and "maximum of 5s" in refused.stderr
    assert broker_client.keys(f"{queue}*") == []  # nothing was published
    ok = turbo("submit", "query", "SELECT 1", "--queue", queue, env=env)
    assert ok.returncode == 0, ok.stderr
    message = messages.decode(broker_client.lrange(f"{queue}:6", 0, -1)[0])
    grace = float(os.environ["TURBO_TIME_LIMIT_GRACE"])
    assert message["headers"]["timelimit"] == [4 + 2 * grace, 4 + grace]


def _url_without_password(db: int) -> str:
    ep = resp.parse_url(os.environ["TURBO_BROKER_URL"])
    return f"redis://{ep.host}:{ep.port}/{db}"


def test_redis_unreachable_exits_3():
    url = f"redis://127.0.0.1:{free_port()}/0"
    for argv in (["submit", "query", "SELECT 1"], ["status"], ["ls"], ["result", "x"]):
        proc = turbo(*argv, env={"TURBO_BROKER_URL": url, "TURBO_RESULT_BACKEND": url})
        assert proc.returncode == 3, (argv, proc.stderr)
        assert f"Redis is unreachable at redis://127.0.0.1:{url.split(':')[2]}" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_wrong_or_missing_password_is_a_clear_auth_error():
    ep = resp.parse_url(os.environ["TURBO_BROKER_URL"])
    wrong = f"redis://:not-the-password@{ep.host}:{ep.port}/0"
    proc = turbo("submit", "query", "SELECT 1",
                 env={"TURBO_BROKER_URL": wrong, "TURBO_RESULT_BACKEND": wrong})
    assert proc.returncode == 3
    assert "refused the password" in proc.stderr and "not-the-password" not in proc.stderr
    bare = _url_without_password(0)
    proc = turbo("ls", env={"TURBO_BROKER_URL": bare, "TURBO_RESULT_BACKEND": bare,
                            "TURBO_REDIS_PASSWORD": ""})
    assert proc.returncode == 3 and "requires a password" in proc.stderr
    # TURBO_REDIS_PASSWORD fills in a URL without one
    proc = turbo("ls", env={"TURBO_BROKER_URL": bare, "TURBO_RESULT_BACKEND":
                            _url_without_password(1), "TURBO_REDIS_PASSWORD": ep.password})
    assert proc.returncode == 0, proc.stderr


def test_one_connection_and_one_round_trip_per_submit(monkeypatch, capsys):
    """Broker and backend on one server share a socket; AUTH + SELECTs ride along."""
    sends = []
    original = resp.Connection.send

    def counting(self, commands):
        sends.append([c[0] for c in commands])
        return original(self, commands)

    monkeypatch.setattr(resp.Connection, "send", counting)
    assert cli.main(["submit", "query", "SELECT 1", "--queue", f"rt-{uuid.uuid4().hex[:6]}"]) == 0
    assert capsys.readouterr().out.strip()
    assert len(sends) == 1, sends
    assert sends[0][:2] == ["AUTH", "SADD"] and "SELECT" in sends[0] and "ZADD" in sends[0]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """A redis-server speaking only TLS and wanting client certificates."""
    from celeryapp.dev.localredis import find_redis_server

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    base = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=base, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=turbo-test-ca")
    (base / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "ext.cnf"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra)
    port = free_port()
    server = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes", "--requirepass", "tlspw",
         "--save", "", "--appendonly", "no", "--dir", str(base)],
        cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"TURBO_BROKER_URL": f"rediss://:tlspw@localhost:{port}/0",
           "TURBO_RESULT_BACKEND": f"rediss://:tlspw@localhost:{port}/1",
           "TURBO_REDIS_TLS_CA": str(base / "ca.crt"),
           "TURBO_REDIS_TLS_CERT": str(base / "client.crt"),
           "TURBO_REDIS_TLS_KEY": str(base / "client.key")}
    deadline = time.monotonic() + 10
    while turbo("ls", env=env).returncode != 0:
        if server.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        if time.monotonic() > deadline:
            server.kill()
            pytest.fail("the TLS redis-server did not come up")
        time.sleep(0.1)
    yield env
    server.terminate()
    server.wait(10)


def test_rediss_with_ca_and_client_certificate(tls_redis):
    task_id = turbo("submit", "query", "SELECT 1", env=tls_redis).stdout.strip()
    assert len(task_id) == 36
    listed = turbo("ls", env=tls_redis)
    assert listed.returncode == 0 and task_id in listed.stdout
    untrusted = turbo("ls", env={**tls_redis, "TURBO_REDIS_TLS_CA": ""})
    assert untrusted.returncode == 3
    assert "not trusted" in untrusted.stderr and "TURBO_REDIS_TLS_CA" in untrusted.stderr
    no_cert = turbo("ls", env={**tls_redis, "TURBO_REDIS_TLS_CERT": "", "TURBO_REDIS_TLS_KEY": ""})
    assert no_cert.returncode == 3 and "client certificate" in no_cert.stderr
    missing = turbo("ls", env={**tls_redis, "TURBO_REDIS_TLS_CA": "/nonexistent/ca.pem"})
    assert missing.returncode == 2 and "cannot load the TLS files" in missing.stderr
