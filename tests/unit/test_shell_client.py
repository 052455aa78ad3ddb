"""The ``turbo`` shell's own client, without Redis: its argument parser agrees with argparse,
its JSON with ``json.dumps``, its RESP framing with redis-py's, and bad input or a server that
is not Redis ends with the documented exit codes (2: usage, 3: Redis unavailable)."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from celeryapp.shell import args as shell_args
from celeryapp.shell import messages, resp

BIN = Path(sys.executable).parent / "turbo"
TURBO = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "celeryapp.shell.cli"]


def turbo(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run([*TURBO, *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_lean_json_matches_json_dumps():
    samples = [
        None, True, False, 0, -7, 2**70, 1.5, 1e-7, 1e22, -0.0, math.inf, -math.inf,
        "plain", "quote \" backslash \\ newline \n tab \t", "é ü 中文 🚀", "\x00\x1f\u2028",
        [], {}, [1, [2, [3, {"a": None}]]], {"k": "v", "n": [1.25, "x"], "e": {}},
        ("tuple", 1), {"sql": "SELECT ? -- ';", "params": {"day": "2026-11-02"}},
    ]
    for value in samples:
        assert messages.dumps(value) == json.dumps(value), value
    nan = messages.dumps([math.nan])
    assert nan == json.dumps([math.nan])
    assert messages.dumps({1: "int key"}) == json.dumps({1: "int key"})  # falls back


@pytest.mark.parametrize("argv", [
    ["submit", "query", "SELECT 1"],
    ["submit", "query", "SELECT ?", "--params", "[1]", "--engine=duckdb", "--timeout", "2.5",
     "--retries", "0", "--priority", "low", "--queue", "q", "--max-inline-rows", "7"],
    ["submit", "query", "--param", '{"a": 1}', "SELECT $a"],
    ["submit", "query", "--", "-- a comment\nSELECT 1"],
    ["submit", "agent", "-", "--host", "alpha", "--allowed-tools", "a,b", "--max-turns", "2",
     "--cwd", "/tmp", "--model", "m", "--permission-mode", "plan", "--profile", "claude",
     "--append-system-prompt", "be brief", "--timeout", "60"],
    ["submit", "flow", "spec.yaml", "--notify", "https://example.test/hook"],
    ["status"], ["status", "a", "b", "--json", "-n", "5"],
    ["result", "x"], ["result", "x", "--wait", "--timeout", "3", "--format", "csv"],
    ["cancel", "x", "--wait", "1"], ["ls"], ["ls", "-n", "3"],
])
def test_fast_parser_agrees_with_argparse(argv):
    fast = shell_args.fast_parse(argv)
    assert fast is not None, argv
    slow = shell_args.build_parser().parse_args(argv)
    assert vars(fast) == vars(slow)


@pytest.mark.parametrize("argv", [
    ["submit", "query", "-h"], ["submit", "query", "x", "--eng", "duckdb"],
    ["submit", "query"], ["submit", "query", "x", "--timeout"], ["submit", "query", "x", "y"],
    ["submit", "query", "x", "--timeout", "soon"], ["result", "x", "--format", "xml"],
    ["status", "--json=1"], ["submit"], ["nope"], [],
])
def test_fast_parser_leaves_the_hard_cases_to_argparse(argv):
    assert shell_args.fast_parse(argv) is None


def test_usage_errors_exit_2_and_name_the_problem():
    cases = [
        (["submit", "query", "SELECT 1", "--timeout", "99999"],
         "exceeds the maximum of 3600s for a query (TURBO_QUERY_MAX_TIMEOUT)"),
        (["submit", "agent", "hi", "--timeout", "99999"], "TURBO_AGENT_MAX_TIMEOUT"),
        (["submit", "query", "SELECT 1", "--timeout", "0"], "positive"),
        (["submit", "query", "SELECT 1", "--params", "{bad"], "--params is not valid JSON"),
        (["submit", "query", "SELECT 1", "--params", "3"], "JSON list or object"),
        (["submit", "query", "SELECT 1", "--priority", "urgent"], "unknown priority 'urgent'"),
        (["submit", "query", "SELECT 1", "--retries", "-1"], "--retries must be >= 0"),
        (["submit", "query", "  "], "the SQL is empty"),
        (["submit", "agent", "hi", "--queue", "q", "--host", "h"], "--queue or --host"),
        (["submit", "query", "SELECT 1", "--timeout", "soon"], "expected a number"),
        (["result", "x", "--format", "xml"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, needle in cases:
        proc = turbo(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert needle in proc.stderr, (argv, proc.stderr)
        assert proc.stdout == ""


@pytest.mark.parametrize("url,needle", [
    ("localhost:6379", "not a Redis URL"),
    ("http://h/0", "unsupported URL scheme"),
    ("redis://h:port/0", "bad port"),
    ("redis://h/x", "bad database number"),
])
def test_bad_urls_are_usage_errors(url, needle):
    """The same rules as celeryapp.core.urls (tests/unit/test_urls.py), as exit code 2."""
    with pytest.raises(resp.RedisConfigError, match=needle):
        resp.parse_url(url)
    proc = turbo("ls", env={"TURBO_BROKER_URL": url, "TURBO_RESULT_BACKEND": url})
    assert proc.returncode == 2 and needle in proc.stderr


@pytest.fixture
def fake_server():
    """A TCP server that is not Redis: it answers HTTP, or says nothing at all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    mode = {"reply": b"HTTP/1.1 400 Bad Request\r\n\r\n"}
    stop = threading.Event()
    held = []

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)
            if mode["reply"]:
                conn.sendall(mode["reply"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], mode
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_is_not_redis_or_hangs_exits_3(fake_server):
    port, mode = fake_server
    url = f"redis://127.0.0.1:{port}/0"
    env = {"TURBO_BROKER_URL": url, "TURBO_RESULT_BACKEND": url, "TURBO_REDIS_PASSWORD": "",
           "TURBO_REDIS_TIMEOUT": "0.5"}
    proc = turbo("ls", env=env)
    assert proc.returncode == 3 and "does not speak the Redis protocol" in proc.stderr
    mode["reply"] = None
    proc = turbo("ls", env=env)
    assert proc.returncode == 3 and "did not answer within 0.5s" in proc.stderr


# --- RESP framing, against redis-py's own ---------------------------------------------
@pytest.mark.parametrize("command", [
    ("PING",),
    ("SET", "k", "value with spaces\r\nand CRLF"),
    ("EVALSHA", "abc", 2, "k1", "k2", -7, 1.5, 1e-7),
    ("LPUSH", b"raw\x00bytes", "é ü 中文 🚀", ""),
])
def test_commands_are_framed_as_redis_py_frames_them(command):
    from redis.connection import Encoder, PythonRespSerializer

    theirs = b"".join(PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
                      .pack(*command))
    assert resp.encode_command(command) == theirs


def test_every_reply_kind_is_read_back():
    """Simple strings, errors, integers, bulk and nil bulk strings, nested and nil arrays,
    split across reads at every byte (a reply that arrives in pieces)."""
    wire = (b"+OK\r\n-WRONGTYPE Operation against a key\r\n:-42\r\n$5\r\nhe\r\no\r\n"
            b"$-1\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*0\r\n*-1\r\n$0\r\n\r\n")
    ours, theirs = socket.socketpair()
    conn = resp.Connection(resp.parse_url("redis://localhost"))
    ours.settimeout(10)
    conn.sock = ours

    def trickle():
        for i in range(len(wire)):
            theirs.sendall(wire[i:i + 1])

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        replies = [conn.read_reply() for _ in range(8)]
    finally:
        feeder.join(10)
        ours.close()
        theirs.close()
    assert replies[0] == "OK"
    assert isinstance(replies[1], resp.ReplyError) and replies[1].code == "WRONGTYPE"
    assert replies[2:] == [-42, b"he\r\no", None, [1, [b"a", None], []], None, b""]
