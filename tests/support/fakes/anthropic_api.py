"""A local stand-in of the Anthropic Messages API, for running the REAL ``claude`` CLI
(``@anthropic-ai/claude-code``) offline. Standard library only.

In process::

    with start_anthropic_api() as api:            # or api = start_anthropic_api(); api.stop()
        env = claude_env(api.url, home)           # tests/support/agent_clis.py
        ... run claude "[api:mode=429 retry-after=1] hi" ...
        api.calls            # [{"mode", "time", "path", "status", "key", "n", ...}, ...]
        api.count()          # POST /v1/messages calls so far; api.count(key="abc") for one key
        api.counts_by_key()  # {"abc": 3, ...}

As a script (one JSON line on stdout: ``{"url", "port", "pid"}``, or the bare port with
``--print-port``; stops on SIGTERM/SIGINT; every call is appended to
``STATE_DIR/calls.jsonl`` when ``--state-dir`` is given)::

    python tests/support/fakes/anthropic_api.py --port 0 --print-port [--mode ok] [--state-dir D]

What the real claude sends (2.1.x, ``ANTHROPIC_BASE_URL`` pointing here, API key auth):
``HEAD /`` (a reachability check), then ``POST /v1/messages?beta=true`` with
``"stream": true``; ``POST /v1/messages/count_tokens`` is answered too. ``GET /`` and
``HEAD /`` answer 200 (recorded with mode ``probe``); anything else 404 (recorded too).

Each entry of ``calls``: ``time`` (its start, epoch s), ``method``, ``path``, ``status``
(None while the answer is pending, e.g. ``slow``), ``mode`` (what it answered: ``ok``,
``429``, ..., ``probe`` for HEAD/GET), ``requested_mode``, ``key``, ``n`` (the key's call
number), ``model``, ``stream``, ``messages`` (how many the request carried),
``tool_result``, ``user_agent``, ``duration``; with ``keep_bodies=True`` also ``body`` and
``headers``. A call is in ``calls`` as soon as it arrives.

Behaviour per request: the directive ``[api:...]`` found in the text of the LAST user
message of the request (tool results and system text are not read), else the server's
default mode (``start_anthropic_api(default_mode=...)``). Tokens are ``k=v`` or a bare
mode name; the first directive in that message wins::

    [api:mode=ok]                   answer text (``text=a_b`` to choose it, underscores as spaces)
    [api:mode=tools]                1st call: a tool_use block (Bash ``echo tool-ran``, or
                                    ``command=ls_-la`` (underscores as spaces), or
                                    ``tool=read path=/abs/file``); a request that carries the
                                    tool_result gets end_turn text "Tool result: <its text>"
    [api:mode=429]                  HTTP 429 rate_limit_error, ``retry-after: 1``
                                    (``retry-after=N``)
    [api:mode=529]                  HTTP 529 overloaded_error
    [api:mode=401]                  HTTP 401 authentication_error
    [api:mode=403]                  HTTP 403 permission_error
    [api:mode=500]                  HTTP 500 api_error
    [api:mode=slow secs=30]         sleep ``secs`` (default 30) then answer as ``ok``
    [api:mode=429 until=2 key=abc]  calls 1..2 with key ``abc`` answer 429, later ones ``ok``
                                    (also written ``mode=429-until=2``)
    [api:mode=empty]                a message with no content blocks (end_turn)
    [api:mode=truncated]            the SSE stream stops after one text delta, connection closed
    stop=REASON                     (with ok/tools/empty) the stop_reason to send, e.g. max_tokens
    model=NAME                      the mode applies only to requests whose model contains NAME;
                                    others answer ``ok`` (e.g. to see --fallback-model at work)

``key`` names the counter of a directive (default: the directive's own text), so tests
that run in parallel with different keys never share one. Every call is counted (see
``calls``, ``count``, ``counts_by_key``); with ``state_dir`` the per-key counters live in
``STATE_DIR/counters.json`` too, so they survive a restart of the stand-in.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODES = ("ok", "tools", "429", "529", "401", "403", "500", "slow", "empty", "truncated")
DIRECTIVE = re.compile(r"\[api:([^\]]*)\]")

# What the real API answers (bodies as of 2025-2026; ``request_id`` is added per call).
ERRORS = {
    "429": (429, "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests "
            "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. "
            "You can see the response headers for current usage. Please reduce the prompt "
            "length or the maximum tokens requested, or try again later. You may also "
            "contact sales at https://www.anthropic.com/contact-sales to discuss your "
            "options for a rate limit increase."),
    "529": (529, "overloaded_error", "Overloaded"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error",
            "Your API key does not have permission to use the specified resource."),
    "500": (500, "api_error", "Internal server error"),
}


def parse_directive(text: str) -> tuple[dict, str] | None:
    """``[api:mode=429 until=2 key=abc]`` -> ({"mode": "429", "until": "2", "key": "abc"}, body)."""
    match = DIRECTIVE.search(text or "")
    if not match:
        return None
    body = match.group(1).strip()
    found: dict = {}
    for token in body.split():
        name, eq, value = token.partition("=")
        if not eq and name in MODES:
            found["mode"] = name
        elif not eq and name.startswith("429-until"):
            found.update(mode="429", until="1")
        else:
            found[name] = value
    mode = found.get("mode", "")
    if mode.startswith("429-until"):  # mode=429-until=2
        found["mode"] = "429"
        found.setdefault("until", mode.partition("=")[2] or "1")
    return found, body


def content_text(content) -> str:
    """The text of a message's content: a string, or the ``text`` blocks of a list."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "\n".join(parts)


def last_user_message(body: dict) -> dict:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return message
    return {}


def tool_results(message: dict) -> list[dict]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def user_directive(body: dict) -> tuple[dict, str] | None:
    """The directive of the last user message; a tool_result turn keeps the one of the
    last user message that had text (so ``tools`` mode sees its own directive again)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        found = parse_directive(content_text(message.get("content")))
        if found:
            return found
        if not tool_results(message):
            return None
    return None


def estimate_tokens(value) -> int:
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class AnthropicAPI:
    """The server and what it saw. ``start()`` returns self; also a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default_mode: str = "ok",
                 state_dir: str | Path | None = None, slow_secs: float = 30.0,
                 retry_after: float = 1.0, keep_bodies: bool = False):
        self.default_mode = default_mode
        self.keep_bodies = keep_bodies
        self.slow_secs = slow_secs
        self.retry_after = retry_after
        self.state_dir = Path(state_dir) if state_dir else None
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.calls: list[dict] = []
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        api = self

        class Handler(_Handler):
            server_api = api

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> AnthropicAPI:
        self._thread = threading.Thread(target=self.server.serve_forever, name="anthropic-api",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> AnthropicAPI:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what it saw --------------------------------------------------------------------
    def count(self, key: str | None = None, path: str = "/v1/messages") -> int:
        """Calls of ``path`` (default: the Messages API), all or those of one directive key."""
        with self._lock:
            return sum(1 for c in self.calls if c["path"] == path
                       and (key is None or c.get("key") == key))

    def counts_by_key(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._counters.clear()
            self._save_counters()

    # -- internals ----------------------------------------------------------------------
    def _next(self, key: str) -> int:
        """This key's call number (1-based), kept in STATE_DIR/counters.json when set."""
        with self._lock:
            if self.state_dir and not self._counters:
                try:
                    self._counters.update(json.loads(
                        (self.state_dir / "counters.json").read_text()))
                except (OSError, ValueError):
                    pass
            self._counters[key] = self._counters.get(key, 0) + 1
            self._save_counters()
            return self._counters[key]

    def _save_counters(self) -> None:
        if self.state_dir:
            tmp = self.state_dir / f"counters.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(self._counters))
            os.replace(tmp, self.state_dir / "counters.json")

    def _record(self, call: dict) -> None:
        with self._lock:
            self.calls.append(call)

    def _finish(self, call: dict) -> None:
        """The call is answered (or abandoned): append it to STATE_DIR/calls.jsonl."""
        with self._lock:
            if self.state_dir:
                with open(self.state_dir / "calls.jsonl", "a") as handle:
                    handle.write(json.dumps({k: v for k, v in call.items() if k != "body"})
                                 + "\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_api: AnthropicAPI

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plain routes -------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._plain(200 if self._path() == "/" else 404, b"", head=True)

    def do_GET(self) -> None:
        path = self._path()
        if path == "/":
            self._plain(200, b"ok\n")
        else:
            self._plain(404, _error_body(404, "not_found_error", f"Not found: {path}"))

    def do_POST(self) -> None:
        path = self._path()
        started = time.time()
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        call = {"time": started, "method": "POST", "path": path, "mode": "unknown",
                "status": None, "key": None, "n": None, "model": None, "stream": None,
                "tool_result": False, "user_agent": self.headers.get("user-agent")}
        self.server_api._record(call)  # counted at once (a slow answer is still a call)
        try:
            if body is None or not isinstance(body, dict):
                call["mode"] = "bad-json"
                call["status"] = self._json(400, _error_body(
                    400, "invalid_request_error", "Request body is not valid JSON"))
            elif path == "/v1/messages/count_tokens":
                call["mode"] = "count_tokens"
                call["status"] = self._json(200, json.dumps(
                    {"input_tokens": estimate_tokens(body.get("messages"))}).encode())
            elif path == "/v1/messages":
                self._messages(body, call)
            else:
                call["status"] = self._json(404, _error_body(
                    404, "not_found_error", f"Not found: {path}"))
        except (BrokenPipeError, ConnectionResetError):
            call["status"] = call["status"] or "client-gone"
        finally:
            call["duration"] = round(time.time() - started, 3)
            self.server_api._finish(call)

    # -- the Messages API ---------------------------------------------------------------
    def _messages(self, body: dict, call: dict) -> None:
        api = self.server_api
        found = user_directive(body)
        opts, key = (found[0], found[0].get("key") or found[1]) if found else ({}, None)
        mode = opts.get("mode") or api.default_mode
        n = api._next(key or f"default:{mode}")
        model = body.get("model") or "claude-unknown"
        last = last_user_message(body)
        results = tool_results(last)
        call.update(key=key, n=n, model=model, stream=bool(body.get("stream")),
                    tool_result=bool(results), requested_mode=mode,
                    messages=len(body.get("messages") or []))
        if api.keep_bodies:
            call["body"] = body
            call["headers"] = {k.lower(): ("<set>" if k.lower() in ("x-api-key", "authorization")
                                           else v) for k, v in self.headers.items()}
        if mode == "429" and "until" in opts:
            mode = "429" if n <= int(opts["until"]) else "ok"
        if "model" in opts and opts["model"] not in model:  # the mode is for that model only
            mode = "ok"
        call["mode"] = mode
        if mode == "slow":
            time.sleep(float(opts.get("secs", api.slow_secs)))
        if mode in ERRORS:
            status, kind, message = ERRORS[mode]
            headers = {}
            if mode == "429":
                headers["retry-after"] = str(opts.get("retry-after", _num(api.retry_after)))
                headers["anthropic-ratelimit-requests-limit"] = "50"
                headers["anthropic-ratelimit-requests-remaining"] = "0"
            if "should-retry" in opts:
                headers["x-should-retry"] = opts["should-retry"]
            call["status"] = self._json(status, _error_body(status, kind, message), headers)
            return
        if mode not in MODES:
            call["status"] = self._json(400, _error_body(
                400, "invalid_request_error", f"stand-in: unknown mode {mode!r}"))
            return
        blocks, stop_reason = self._answer(mode, opts, model, last, results)
        if mode == "empty":
            blocks = []
        stop_reason = opts.get("stop", stop_reason)
        usage = {"input_tokens": estimate_tokens(body.get("messages")),
                 "cache_creation_input_tokens": estimate_tokens(body.get("system") or "")
                 + estimate_tokens(body.get("tools") or []),
                 "cache_read_input_tokens": 0,
                 "output_tokens": sum(estimate_tokens(b) for b in blocks),
                 "service_tier": "standard"}
        message = {"id": new_id("msg_01"), "type": "message", "role": "assistant",
                   "model": model, "content": blocks, "stop_reason": stop_reason,
                   "stop_sequence": None, "usage": usage}
        if body.get("stream"):
            call["status"] = 200
            self._stream(message, truncated=mode == "truncated")
        else:
            call["status"] = self._json(200, json.dumps(message).encode())

    def _answer(self, mode, opts, model, last, results):
        if mode == "tools" and not results:
            if opts.get("tool", "bash").lower() == "read":
                tool = {"type": "tool_use", "id": new_id("toolu_01"), "name": "Read",
                        "input": {"file_path": opts.get("path", "/etc/hostname")}}
            else:
                tool = {"type": "tool_use", "id": new_id("toolu_01"), "name": "Bash",
                        "input": {"command": opts.get("command", "echo_tool-ran").replace(
                                      "_", " "),
                                  "description": "Print a marker"}}
            return [{"type": "text", "text": "Running the tool."}, tool], "tool_use"
        if results:
            quoted = _tool_result_text(results[0])[:200]
            error = " (error)" if results[0].get("is_error") else ""
            return [{"type": "text", "text": f"Tool result{error}: {quoted}"}], "end_turn"
        text = opts.get("text")
        text = text.replace("_", " ") if text else f"Hello from the stand-in ({model})."
        return [{"type": "text", "text": text}], "end_turn"

    def _stream(self, message: dict, truncated: bool = False) -> None:
        """Server-sent events in the order and shape of the real API."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", new_id("req_011"))
        self.send_header("anthropic-organization-id", "00000000-0000-0000-0000-000000000000")
        self.end_headers()
        usage = message["usage"]
        start = dict(message, content=[], stop_reason=None,
                     usage=dict(usage, output_tokens=1))
        self._event("message_start", {"type": "message_start", "message": start})
        if truncated:  # the connection drops mid-stream
            self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": "Hel"}})
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "text", "text": ""}})
                if index == 0:
                    self._event("ping", {"type": "ping"})
                text = block["text"]
                for piece in (text[:len(text) // 2], text[len(text) // 2:]):
                    if piece:
                        self._event("content_block_delta", {
                            "type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}})
            else:  # tool_use
                self._event("content_block_start", {
                    "type": "content_block_start", "index": index,
                    "content_block": dict(block, input={})})
                partial = json.dumps(block["input"])
                self._event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""}})
                self._event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": partial}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"input_tokens": usage["input_tokens"],
                      "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                      "cache_read_input_tokens": usage["cache_read_input_tokens"],
                      "output_tokens": usage["output_tokens"]}})
        self._event("message_stop", {"type": "message_stop"})
        self._chunk(b"")

    def _event(self, name: str, data: dict) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- helpers ------------------------------------------------------------------------
    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _json(self, status: int, data: bytes, headers: dict | None = None) -> int:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", new_id("req_011"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        return status

    def _plain(self, status: int, data: bytes, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/plain" if status == 200 else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)
        call = {"time": time.time(), "method": self.command, "path": self._path(),
                "mode": "probe", "status": status, "key": None, "n": None}
        self.server_api._record(call)
        self.server_api._finish(call)


def _error_body(status: int, kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message},
                       "request_id": new_id("req_011")}).encode()


def _tool_result_text(result: dict) -> str:
    content = result.get("content")
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def start_anthropic_api(state_dir: str | Path | None = None, *, default_mode: str = "ok",
                        host: str = "127.0.0.1", port: int = 0, slow_secs: float = 30.0,
                        retry_after: float = 1.0, keep_bodies: bool = False) -> AnthropicAPI:
    """A started stand-in; ``.url``, ``.calls``, ``.count()``, ``.stop()`` (or ``with``).
    ``keep_bodies`` keeps each request's JSON in its call's ``body`` (not in calls.jsonl)."""
    return AnthropicAPI(host=host, port=port, default_mode=default_mode, state_dir=state_dir,
                        slow_secs=slow_secs, retry_after=retry_after,
                        keep_bodies=keep_bodies).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok", help="default mode when a request has no directive")
    parser.add_argument("--state-dir", help="append calls to STATE_DIR/calls.jsonl, keep counters")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--slow-secs", type=float, default=30.0)
    parser.add_argument("--print-port", action="store_true", help="print only the port")
    args = parser.parse_args(argv)
    api = start_anthropic_api(args.state_dir, default_mode=args.mode, host=args.host,
                              port=args.port, slow_secs=args.slow_secs,
                              retry_after=args.retry_after)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(api.port if args.print_port else json.dumps(
        {"url": api.url, "port": api.port, "pid": os.getpid()}), flush=True)
    while not done.wait(0.5):
        pass
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
