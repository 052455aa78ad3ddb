"""A local stand-in for the OpenAI Responses API (``POST /v1/responses``, streamed SSE).

Stdlib only. It is what the real ``codex exec`` talks to in tests::

    with start_openai_api() as api:          # or start_openai_api(mode_default="429")
        env = {"PATH": ..., "CODEX_HOME": home,   # CODEX_HOME must exist (or HOME -> ~/.codex)
               "OPENAI_API_KEY": "sk-test"}       # the variable named by env_key below
        argv = ["codex", "exec", "--json", "--ephemeral", "--skip-git-repo-check",
                "--disable", "unbounded_connection_retries",   # else a dead server = endless wait
                "--disable", "plugins", "-c", "analytics.enabled=false",  # no other traffic
                "-c", 'model_provider="standin"',
                "-c", 'model_providers.standin.name="standin"',            # required
                "-c", f'model_providers.standin.base_url="{api.url}"',     # POSTs <url>/responses
                "-c", 'model_providers.standin.wire_api="responses"',
                "-c", 'model_providers.standin.env_key="OPENAI_API_KEY"',  # Bearer <its value>
                "-c", "model_providers.standin.request_max_retries=0",
                "-c", "model_providers.standin.stream_max_retries=0",      # 429s retry only here
                "-c", "model_providers.standin.stream_idle_timeout_ms=10000",
                "-m", "gpt-5.5", "-"]                 # "-": the prompt is read from stdin
        api.calls  # one dict per HTTP request (see below)

``OPENAI_BASE_URL`` is ignored by codex 0.171. The built-in ``openai`` provider can be pointed
here with ``-c openai_base_url="<api.url>"`` (key from ``CODEX_API_KEY``), but it first tries a
WebSocket (7 ``GET /v1/responses`` answered 404 here, ~6 s) before falling back to HTTPS, and
its retry settings cannot be overridden; the custom provider above avoids both.

What each request gets is chosen by a directive in the prompt text (the last user input of the
request body), else by ``mode_default``:

    [api:mode=ok]            a streamed answer "standin answer: <first 60 chars of the prompt>"
    [api:mode=429]           HTTP 429 rate_limit_exceeded with ``retry-after: 1``
    [api:mode=quota]         HTTP 429 insufficient_quota (no retry-after)
    [api:mode=401]           HTTP 401 invalid_api_key
    [api:mode=403]           HTTP 403 (unsupported_country_region_territory)
    [api:mode=500]           HTTP 500 server_error
    [api:mode=hang]          200 + response.created, then nothing (stream idle) until stop()
    [api:mode=disconnect]    200 + response.created, then the connection is closed
    [api:mode=slow secs=N]   wait N seconds (default 30), then answer as ok
    [api:mode=429 times=2]   the first 2 such requests fail as 429, later ones answer ok
                             (``until=2`` is the same; ``key=NAME`` names the counter, default:
                             the mode + prompt text, so parallel tests should use distinct keys)
    [api:text=WORDS]         the answer text (underscores become spaces)

Each entry of ``calls``: method, path, status, mode (what was answered), model, stream, prompt
(the last user text), authorization, t (epoch s), headers, body. ``count()`` counts them.

As a script (prints one JSON line ``{"url", "port", "pid"}``; stops on SIGTERM/SIGINT)::

    python3 tests/support/fakes/openai_api.py [--port 0] [--mode ok]
"""
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler

try:
    from . import standin
except ImportError:  # run as a script
    import standin
Standin = standin.Standin

ERRORS = {
    "429": (429, {"error": {
        "message": "Rate limit reached for gpt-5 in organization org-standin on tokens per min "
                   "(TPM): Limit 30000, Used 30000, Requested 1200. Please try again in 1s.",
        "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}),
    "quota": (429, {"error": {
        "message": "You exceeded your current quota, please check your plan and billing details. "
                   "For more information on this error, read the docs: "
                   "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}),
    "401": (401, {"error": {
        "message": "Incorrect API key provided: sk-test. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
    "403": (403, {"error": {
        "message": "Country, region, or territory not supported",
        "type": "request_forbidden", "param": None,
        "code": "unsupported_country_region_territory"}}),
    "500": (500, {"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": None, "code": None}}),
}


def last_user_text(body):
    """The text of the last user message of a Responses API request body."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    texts = []
    for item in items or []:
        if item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts = [content]
            continue
        texts = [part.get("text", "") for part in content or [] if isinstance(part, dict)]
    return "\n".join(texts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        api = self.server.api
        api._record({"method": "GET", "path": self.path, "mode": None, "status": 404})
        self._json(404, {"error": {"message": f"Unknown path {self.path}", "type":
                                   "invalid_request_error", "param": None, "code": None}})

    def do_POST(self):
        api = self.server.api
        body = standin.read_json(self)
        prompt = last_user_text(body)
        do = standin.directives(prompt)
        mode, delay = standin.choose_mode(api, do, prompt)
        call = {"method": "POST", "path": self.path, "mode": mode, "model": body.get("model"),
                "stream": body.get("stream"), "prompt": prompt,
                "authorization": self.headers.get("authorization"), "t": time.time(),
                "headers": dict(self.headers), "body": body}
        if not self.path.rstrip("/").endswith("/responses"):
            call["status"] = 404
            api._record(call)
            return self._json(404, {"error": {"message": f"Unknown path {self.path}"}})
        if mode in ERRORS:
            status, payload = ERRORS[mode]
            call["status"] = status
            api._record(call)
            headers = ([("retry-after", "1"), ("x-ratelimit-reset-tokens", "1s")]
                       if mode == "429" else [])
            return self._json(status, payload, headers)
        call["status"] = 200
        api._record(call)
        if delay:
            api.stopped.wait(delay)
        text = do.get("text", "").replace("_", " ") or f"standin answer: {prompt[:60]}"
        self._stream(body, mode, text)

    def _event(self, payload):
        self.wfile.write(f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _stream(self, body, mode, text):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        rid, mid = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
        model = body.get("model") or "gpt-5"
        response = {"id": rid, "object": "response", "created_at": int(time.time()),
                    "status": "in_progress", "model": model, "output": []}
        self._event({"type": "response.created", "sequence_number": 0, "response": response})
        if mode == "hang":
            self.server.api.stopped.wait()
            return
        if mode == "disconnect":
            return
        item = {"id": mid, "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
        self._event({"type": "response.output_item.added", "sequence_number": 1,
                     "output_index": 0, "item": item})
        self._event({"type": "response.content_part.added", "sequence_number": 2,
                     "item_id": mid, "output_index": 0, "content_index": 0,
                     "part": {"type": "output_text", "text": "", "annotations": []}})
        self._event({"type": "response.output_text.delta", "sequence_number": 3, "item_id": mid,
                     "output_index": 0, "content_index": 0, "delta": text})
        self._event({"type": "response.output_text.done", "sequence_number": 4, "item_id": mid,
                     "output_index": 0, "content_index": 0, "text": text})
        done = dict(item, status="completed",
                    content=[{"type": "output_text", "text": text, "annotations": []}])
        self._event({"type": "response.content_part.done", "sequence_number": 5, "item_id": mid,
                     "output_index": 0, "content_index": 0, "part": done["content"][0]})
        self._event({"type": "response.output_item.done", "sequence_number": 6,
                     "output_index": 0, "item": done})
        usage = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200},
                 "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": 1207}
        self._event({"type": "response.completed", "sequence_number": 7, "response": dict(
            response, status="completed", output=[done], usage=usage)})


class OpenAIStandin(Standin):
    """A running stand-in: ``.url`` (ends in /v1), ``.calls``, ``.stop()``; a context manager."""
    url_path = "/v1"

    def __init__(self, mode_default="ok", host="127.0.0.1", port=0):
        super().__init__(_Handler, mode_default, host, port)


def start_openai_api(mode_default="ok", host="127.0.0.1", port=0):
    return OpenAIStandin(mode_default, host, port)


def main(argv):
    return standin.main(argv, start_openai_api, "OpenAI Responses API stand-in")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
