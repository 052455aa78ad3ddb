"""What the API stand-ins of codex and gemini share (openai_api.py, gemini_api.py): a
threaded HTTP server that records every call, and the script entry point."""
from __future__ import annotations

import json
import re
import sys
import threading
from http.server import ThreadingHTTPServer


def directives(text):
    """``[api:mode=429 times=2 key=k]`` -> {"mode": "429", "times": "2", "key": "k"}."""
    found = {}
    for body in re.findall(r"\[api:([^\]]*)\]", text or ""):
        for token in body.split():
            key, _, value = token.partition("=")
            found[key] = value
    return found


def read_json(handler) -> dict:
    """The request's JSON body ({} when it is not JSON)."""
    raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {}


def choose_mode(api, do: dict, prompt: str) -> tuple[str, float]:
    """(mode, seconds to wait first) for one request: the directive's mode (else the
    stand-in's default); ``times``/``until`` N fail N requests of a ``key``, then ``ok``;
    ``slow`` waits ``secs`` and answers ``ok``."""
    mode = do.get("mode", api.mode_default)
    limit = do.get("times", do.get("until"))
    if mode != "ok" and limit is not None:
        key = do.get("key") or (mode, prompt)
        with api.lock:
            seen = api.failures.get(key, 0)
            api.failures[key] = seen + 1
        if seen >= int(limit):
            mode = "ok"
    if mode == "slow":
        return "ok", float(do.get("secs", 30))
    return mode, 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Standin:
    """A running stand-in: ``.url``, ``.calls``, ``.count()``, ``.stop()``; a context
    manager. The handler finds it as ``self.server.api``."""

    url_path = ""

    def __init__(self, handler, mode_default="ok", host="127.0.0.1", port=0):
        self.mode_default = mode_default
        self.calls = []
        self.failures = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.server = _Server((host, port), handler)
        self.server.api = self
        self.url = f"http://{host}:{self.server.server_address[1]}{self.url_path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, call):
        with self.lock:
            self.calls.append(call)

    def count(self, path_contains=None):
        """How many requests arrived (optionally only those whose path contains the text)."""
        with self.lock:
            return sum(1 for call in self.calls
                       if path_contains is None or path_contains in call["path"])

    def stop(self):
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv, start, description):
    """Serve until SIGTERM/SIGINT; print ``{"url", "port", "pid"}`` first."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args(argv)
    api = start(args.mode, port=args.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(json.dumps({"url": api.url, "port": api.server.server_address[1], "pid": os.getpid()}),
          flush=True)
    done.wait()
    api.stop()
    return 0
