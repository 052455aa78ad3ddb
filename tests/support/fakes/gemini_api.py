"""A local stand-in for the Gemini API (``generativelanguage.googleapis.com``), stdlib only.

It answers ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` (SSE),
``:generateContent`` and ``:countTokens``; it is what the real ``gemini`` CLI talks to in tests::

    with start_gemini_api() as api:           # or start_gemini_api(mode_default="429")
        # <home>/.gemini/settings.json -- the selectedType is REQUIRED: with
        # GOOGLE_GEMINI_BASE_URL alone the CLI picks the "gateway" auth type and headless mode
        # exits 41 "Invalid auth method selected."; maxAttempts bounds its retries (default 10):
        #   {"security": {"auth": {"selectedType": "gemini-api-key"}},
        #    "general": {"maxAttempts": 1}}
        env = {"PATH": ..., "GEMINI_CLI_HOME": home,    # or HOME
               "GOOGLE_GEMINI_BASE_URL": api.url,       # no path; it adds /v1beta/models/...
               "GEMINI_API_KEY": "dummy",               # sent as x-goog-api-key
               "TMPDIR": scratch}                       # its error reports land in $TMPDIR
        argv = ["gemini", "-o", "json", "--skip-trust", "-m", "gemini-2.5-flash", "-p", ""]
        # prompt on stdin (written at once: the CLI waits only 500 ms for the first byte);
        # -p "" makes it headless; without -m an extra "router" generateContent call is made
        api.calls  # one dict per HTTP request (see below)

What each request gets is chosen by a directive in the prompt text (the last user turn of the
request), else by ``mode_default``:

    [api:mode=ok]            a streamed answer "standin answer: <first 60 chars of the prompt>"
    [api:mode=429]           HTTP 429 RESOURCE_EXHAUSTED (with a RetryInfo of 1s)
    [api:mode=401]           HTTP 401 UNAUTHENTICATED
    [api:mode=403]           HTTP 403 PERMISSION_DENIED
    [api:mode=400]           HTTP 400 INVALID_ARGUMENT (API key not valid)
    [api:mode=500]           HTTP 500 INTERNAL
    [api:mode=503]           HTTP 503 UNAVAILABLE (model overloaded)
    [api:mode=hang]          200 + headers, then nothing until stop()
    [api:mode=disconnect]    200 + headers, then the connection is closed
    [api:mode=slow secs=N]   wait N seconds (default 30), then answer as ok
    [api:mode=429 times=2]   the first 2 such requests fail as 429, later ones answer ok
                             (``until=2`` is the same; ``key=NAME`` names the counter, default:
                             the mode + prompt text, so parallel tests should use distinct keys)
    [api:text=WORDS]         the answer text (underscores become spaces)

Each entry of ``calls``: method, path, rpc (streamGenerateContent...), model, status, mode (what
was answered), prompt (the last user text part), api_key, t (epoch s), headers, body.
``count("streamGenerateContent")`` counts them. Requests that carry a JSON response schema (the
CLI's own router/helper calls when no ``-m`` is given) get a minimal JSON instance of it.

As a script (prints one JSON line ``{"url", "port", "pid"}``; stops on SIGTERM/SIGINT)::

    python3 tests/support/fakes/gemini_api.py [--port 0] [--mode ok]
"""
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

try:
    from . import standin
except ImportError:  # run as a script
    import standin
Standin = standin.Standin


def _error(code, status, message, details=None):
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return code, {"error": error}


ERRORS = {
    "429": _error(429, "RESOURCE_EXHAUSTED",
                  "You exceeded your current quota, please check your plan and billing details. "
                  "For more information on this error, head to: "
                  "https://ai.google.dev/gemini-api/docs/rate-limits.",
                  [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                      "quotaMetric": "generativelanguage.googleapis.com/"
                                     "generate_content_free_tier_requests",
                      "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                      "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                      "quotaValue": "10"}]},
                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]),
    "401": _error(401, "UNAUTHENTICATED",
                  "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                  "login cookie or other valid authentication credential."),
    "403": _error(403, "PERMISSION_DENIED",
                  "Method doesn't allow unregistered callers (callers without established "
                  "identity). Please use API Key or other form of API consumer identity to call "
                  "this API."),
    "400": _error(400, "INVALID_ARGUMENT",
                  "API key not valid. Please pass a valid API key.",
                  [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}]),
    "500": _error(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                   "https://developers.generativeai.google/guide/troubleshooting"),
    "503": _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def last_user_parts(body):
    """The text parts of the last user turn that has text (not a function response)."""
    texts = []
    for content in body.get("contents") or []:
        if content.get("role", "user") != "user":
            continue
        parts = [p.get("text", "") for p in content.get("parts") or [] if "text" in p]
        if parts:
            texts = parts
    return texts


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, payload, close=False):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        api = self.server.api
        path = urlsplit(self.path).path
        api._record({"method": "GET", "path": self.path, "mode": None, "status": 200})
        if path.rstrip("/").endswith("/models"):
            return self._json(200, {"models": [{"name": "models/gemini-2.5-flash"},
                                               {"name": "models/gemini-2.5-pro"}]})
        return self._json(404, ERRORS["400"][1] | {"error": {
            "code": 404, "message": f"Unknown path {path}", "status": "NOT_FOUND"}})

    def do_POST(self):
        api = self.server.api
        body = standin.read_json(self)
        path = urlsplit(self.path).path
        model, _, method = path.rsplit("/", 1)[-1].partition(":")
        parts = last_user_parts(body)
        prompt = parts[-1] if parts else ""  # the CLI puts <session_context> in an earlier part
        do = standin.directives("\n".join(parts))
        mode, delay = standin.choose_mode(api, do, prompt)
        call = {"method": "POST", "path": self.path, "rpc": method, "model": model, "mode": mode,
                "prompt": prompt, "api_key": self.headers.get("x-goog-api-key"),
                "headers": dict(self.headers), "body": body, "t": time.time()}
        if method == "countTokens":
            call["status"] = 200
            api._record(call)
            return self._json(200, {"totalTokens": max(1, len(prompt.split()))})
        if method not in ("streamGenerateContent", "generateContent"):
            call["status"] = 404
            api._record(call)
            return self._json(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                              "message": f"Unknown method {method}"}})
        if mode in ERRORS:
            status, payload = ERRORS[mode]
            call["status"] = status
            api._record(call)
            return self._json(status, payload)
        call["status"] = 200
        api._record(call)
        if delay:
            api.stopped.wait(delay)
        text = do.get("text", "").replace("_", " ") or f"standin answer: {prompt[:60]}"
        if method == "generateContent":
            if mode in ("hang", "disconnect"):
                return self._stall(mode)
            return self._json(200, self._answer(model, body, text))
        self._stream(model, body, mode, text)

    def _answer(self, model, body, text):
        schema = (body.get("generationConfig") or {}).get("responseJsonSchema") or \
            (body.get("generationConfig") or {}).get("responseSchema")
        if schema:  # internal helper calls (routing, next-speaker...) want JSON
            text = json.dumps(_fill_schema(schema))
        return {
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 7,
                              "totalTokenCount": 1207, "cachedContentTokenCount": 200,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}]},
            "modelVersion": model, "responseId": uuid.uuid4().hex[:22],
        }

    def _stall(self, mode):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        if mode == "hang":
            self.server.api.stopped.wait()

    def _stream(self, model, body, mode, text):
        if mode in ("hang", "disconnect"):
            return self._stall(mode)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        full = self._answer(model, body, text)
        first = {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                 "index": 0}],
                 "usageMetadata": {"promptTokenCount": 1200, "totalTokenCount": 1200},
                 "modelVersion": model, "responseId": full["responseId"]}
        last = {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": full["usageMetadata"], "modelVersion": model,
                "responseId": full["responseId"]}
        for chunk in (first, last):
            self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            self.wfile.flush()


def _fill_schema(schema):
    """A minimal instance of a JSON schema (for the CLI's internal structured calls)."""
    kind = schema.get("type", "object")
    kind = kind.lower() if isinstance(kind, str) else "object"
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _fill_schema(sub) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    return "standin"


class GeminiStandin(Standin):
    """A running stand-in: ``.url`` (no path), ``.calls``, ``.stop()``; a context manager."""
    url_path = ""

    def __init__(self, mode_default="ok", host="127.0.0.1", port=0):
        super().__init__(_Handler, mode_default, host, port)


def start_gemini_api(mode_default="ok", host="127.0.0.1", port=0):
    return GeminiStandin(mode_default, host, port)


def main(argv):
    return standin.main(argv, start_gemini_api, "Gemini API stand-in")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
