"""A local Databricks SQL warehouse stand-in for tests: the real ``databricks-sql-connector``
talks to it with its default protocol (Thrift ``TCLIService`` in TBinaryProtocol, one HTTP
POST per call to the warehouse's ``http_path``, over TLS) and DuckDB runs the SQL.

Start one in process::

    wh = start_warehouse(tmp_path, duckdb_path=None, token=None)   # WarehouseServer, started
    ...
    wh.stop()

or as its own process (prints one JSON line: ``url``, ``env``, ``ca_file``; stops on SIGTERM)::

    python tests/support/fakes/warehouse.py --port 0 --token T --cert-dir D [--duckdb F]

How a client points the connector at it (checked with connector 4.9.0)
----------------------------------------------------------------------
``wh.connect_kwargs()`` gives exactly this::

    sql.connect(server_hostname="127.0.0.1", http_path=wh.http_path, access_token=wh.token,
                _port=wh.port,                         # required
                _tls_trusted_ca_file=str(wh.ca_file),  # or SSL_CERT_FILE in the environment
                enable_telemetry=False)                # strongly advised, see below

* Port: the connector dials 443 unless given the private kwarg ``_port``. A port in
  ``server_hostname`` ("127.0.0.1:PORT") fails: it builds ``https://127.0.0.1:PORT:443/...``
  (``ValueError: Port could not be cast to integer value as 'PORT:443'``).
  ``wh.env()`` carries it as ``DATABRICKS_PORT``: the project's engine must pass that as
  ``_port`` (it reads no such variable today).
* Trust: ``_tls_trusted_ca_file=<ca.pem>`` works, and so does ``SSL_CERT_FILE=<ca.pem>`` in
  the environment with no kwarg (urllib3 loads the default verify paths per connection).
  ``wh.env()`` sets ``SSL_CERT_FILE``, so a worker needs no code for it. An untrusted CA
  ends in a raw ``urllib3.exceptions.MaxRetryError`` (``SSLError CERTIFICATE_VERIFY_FAILED``)
  after the connector's retries.
* Telemetry: with ``enable_telemetry`` left on, the first ``connect()`` of a process blocks
  on a feature-flag GET to ``https://<server_hostname>/api/2.0/connector-service/...`` on
  port 443 whatever ``_port`` says: refused here and retried, ~35 s with the default retry
  settings (~2 s with the small ones the tests use). The engine should pass
  ``enable_telemetry=False`` (a setting, or always).

What the stand-in does
----------------------
OpenSession (``configuration``, ``initialNamespace``: a schema DuckDB lacks gives
``[SCHEMA_NOT_FOUND] ... SQLSTATE: 42704``; the catalog is only recorded), CloseSession,
ExecuteStatement (sync and ``runAsync``; native parameters: ``:name`` -> DuckDB ``$name``,
``?`` positional; ``confOverlay`` recorded), GetOperationStatus (long-poll: answers on a
state change or after ``status_wait`` s, default 1), GetResultSetMetadata, FetchResults
(Arrow IPC batches, lz4-framed when the client allows it, or column-based when
``canReadArrowResult`` is false; pages of at most ``min(maxRows, page_rows)`` rows),
direct results for a synchronous execute that finishes within ``status_wait``,
CancelOperation (interrupts DuckDB), CloseOperation. A DuckDB error is an ERROR_STATE with
``sqlState`` and a Databricks-style message ``[ERROR_CLASS] text SQLSTATE: XXXXX``
(``PARSE_SYNTAX_ERROR`` 42601, ``TABLE_OR_VIEW_NOT_FOUND`` 42P01,
``UNRESOLVED_COLUMN.WITHOUT_SUGGESTION`` 42703, ``UNBOUND_SQL_PARAMETER`` 42P02,
``CAST_INVALID_INPUT`` 22018, ...); DuckDB's own text is the ``diagnosticInfo``.
Auth on every Thrift request: ``Authorization: Bearer <token>``; a wrong token answers 403,
none 401 (``missing_token_status``), both with ``x-databricks-reason-phrase``.
OAuth M2M (``oauth_clients={client_id: secret}``), as a workspace serves it to the
Databricks SDK: ``GET /.well-known/databricks-config`` (the host's metadata:
``oidc_endpoint`` ``<url>/oidc``, ``workspace_id``, ``account_id``), then
``GET /oidc/.well-known/oauth-authorization-server`` (RFC 8414: ``issuer``,
``token_endpoint`` ``<url>/oidc/v1/token`` or the ``token_endpoint`` option,
``authorization_endpoint``, ``jwks_uri``, ...), both without credentials; then
``POST /oidc/v1/token`` with ``grant_type=client_credentials`` and the client's id and
secret (HTTP Basic, or ``client_id``/``client_secret`` in the form) answers a JWT access
token (``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``; its ``iss`` is
``<url>/oidc``, as a workspace's); a wrong secret answers 401 ``invalid_client``. Such a
token is then accepted on Thrift requests like ``token`` until it expires
(``token_ttl`` s). ``wh.oauth_env(client_id)`` is the worker environment for it.
SQL is DuckDB's (``range(n)`` yields ``range``, not ``id``). DuckDB file locks: a file the
stand-in opens read-write cannot be opened by another process; pass ``read_only=True``
to share it with readers.

Observing and breaking it
-------------------------
``wh.stats`` (``warehouse_faults.Stats``): ``calls`` per Thrift method (``open_session``,
``close_session``, ``execute_statement``, ``cancel_operation``), ``open_sessions``,
``running_operations``, ``requests`` (method, HTTP status, user agent), ``user_agents``,
``session_configs``, ``conf_overlays``, ``statements``, ``executions``. ``wh.faults``
(``warehouse_faults.Faults``): ``slow(seconds, pattern=None, count=None)``,
``http_error(status, count=1, method=None, retry_after=1, message=None)``,
``warehouse_starting(seconds, methods=("OpenSession", "ExecuteStatement"))``,
``delay(seconds, method="OpenSession", count=1)`` (hold a request before acting on it),
``drop_connection(count=1, method="ExecuteStatement", after_processing=True)``,
``token_error(status=503, count=1, error=None)`` (the OAuth token endpoint fails),
``forget_sessions(session_id=None)``, ``clear()``. Over HTTPS, without the token:
``GET /_standin/state``, ``POST /_standin/faults`` (``{"action": "slow", "seconds": 3}`` or
a list of such), ``POST /_standin/reset``; ``remote_state`` / ``remote_fault`` call them.

What the connector does (4.9.0, measured against this stand-in)
---------------------------------------------------------------
* 403 (wrong token): ``RequestError``, not retried, ``str()`` ``"Error during request to
  server: : Invalid access token.. "``, ``context["http-code"] == 403``,
  ``context["error-message"] == ": Invalid access token."`` (from the reason header),
  ``context["method"] == "OpenSession"``, ``args[1]`` an empty ``EOFError`` (Thrift read the
  text body). 401 surfaces the same way with http-code 401.
* 429 / 503: urllib3 retries inside the one Thrift call (ExecuteStatement included). Each
  retry sleeps ``max(Retry-After, _retry_delay_max)`` and the connector clamps
  ``_retry_delay_max`` to [5, 3600] (default 60): at least 5 s per retry, 60 s with
  defaults. ``_retry_stop_after_attempts_count=N`` allows N retries (N+1 requests), then a
  raw ``urllib3.exceptions.MaxRetryError`` ("too many 503 error responses"), no databricks
  exception, the ``x-thriftserver-error-message`` lost. A retry whose sleep would end past
  ``_retry_stop_after_attempts_duration`` (>= 1 s) fails at once: ``RequestError`` with
  ``args[1]`` a ``MaxRetryDurationError`` and a stale ``context["http-code"]``.
  ``_retry_delay_min`` (>= 0.1) only sets the backoff after connection errors
  (2**k * delay_min); ``_retry_delay_default`` only GetOperationStatus OSError retries.
* Warehouse starting (HTTP 503 + ``x-thriftserver-error-message: TEMPORARILY_UNAVAILABLE:
  ...``, as the Databricks JDBC driver reports a starting cluster): retried as any 503.
* Dropped connection: urllib3 re-sends the POST (any method, ExecuteStatement included)
  after 2 * ``_retry_delay_min``. If the warehouse had started the statement it runs twice
  (the first operation is orphaned). A lost FetchResults answer skips a page: the re-sent
  FETCH_NEXT raises ``DataError("... Expected results to start from X but they instead
  start at Y ...")``.
* Cancel: ``cursor.cancel()`` is a no-op (a logged warning) until ExecuteStatement has
  answered (``cursor.active_command_id``). Then it waits for the connection's request lock,
  held by the executing thread's long-polled GetOperationStatus; the lock is not fair, so
  it often waits two polls or more. The server reports CANCELED_STATE with an OK status and
  no message; the connector then asks for the metadata, and the stand-in answers an error
  saying ``... found CANCELED``, so ``execute()`` raises a plain ``DatabaseError``.
* A forgotten session: ``DatabaseError("Invalid SessionHandle: SessionHandle [<id>]")``, no
  SQLSTATE, empty context; ``connection.close()`` logs and swallows the same error.
* SQL errors: ``ServerOperationError(displayMessage)``, context ``operation-id`` and
  ``diagnostic-info``.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import jwt
from databricks.sql.thrift_api.TCLIService import TCLIService
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

try:
    from .warehouse_faults import Faults, Stats
    from .warehouse_thrift import WarehouseService
    from .warehouse_tls import make_certs
except ImportError:  # run as a script: python tests/support/fakes/warehouse.py
    from warehouse_faults import Faults, Stats
    from warehouse_thrift import WarehouseService
    from warehouse_tls import make_certs

log = logging.getLogger("warehouse-standin")

INVALID_TOKEN = "Invalid access token."
NO_TOKEN = "Credential was not sent or was of an unsupported type for this API."


class WarehouseServer:
    """One stand-in warehouse. ``start()`` it (or use ``start_warehouse``); ``stop()`` ends it.

    Attributes for tests: ``hostname``, ``port``, ``http_path``, ``token``, ``ca_file``,
    ``url`` (``https://127.0.0.1:PORT``), ``stats`` (``warehouse_faults.Stats``),
    ``faults`` (``warehouse_faults.Faults``), ``service`` (the Thrift handler),
    ``db`` (the DuckDB connection, to create tables before a test).
    """

    def __init__(self, cert_dir: str | Path, *, token: str | None = None, port: int = 0,
                 duckdb_path: str | Path | None = None, read_only: bool = False,
                 warehouse_id: str | None = None, status_wait: float = 1.0,
                 page_rows: int = 100_000, lz4: bool = True, threads: int = 1,
                 missing_token_status: int = 401, setup_sql: str | None = None,
                 oauth_clients: dict[str, str] | None = None, token_ttl: float = 3600,
                 token_endpoint: str | None = None) -> None:
        self.hostname = "127.0.0.1"
        self.token = token or "dapi" + secrets.token_hex(16)
        self.warehouse_id = warehouse_id or secrets.token_hex(8)
        self.http_path = f"/sql/1.0/warehouses/{self.warehouse_id}"
        self.missing_token_status = missing_token_status
        self.oauth_clients = dict(oauth_clients or {})
        self.token_ttl = token_ttl
        self.token_endpoint = token_endpoint  # what discovery names (None: its own)
        self.workspace_id = str(secrets.randbelow(10**15) + 10**15)
        self.account_id = str(uuid.uuid4())
        self._issued: dict[str, float] = {}  # OAuth access token -> expiry (time.time())
        self._jwt_key = secrets.token_hex(32)
        self._lock = threading.Lock()
        self.certs = make_certs(Path(cert_dir))
        self.ca_file = self.certs.ca_file
        self.db = duckdb.connect(str(duckdb_path) if duckdb_path else ":memory:",
                                 read_only=read_only, config={"threads": threads})
        if setup_sql:
            self.db.execute(setup_sql)
        self.stats = Stats()
        self.faults = Faults(warehouse_id=self.warehouse_id)
        self.service = WarehouseService(self.db, self.stats, self.faults, status_wait=status_wait,
                                        page_rows=page_rows, lz4=lz4)
        self.faults._forget = self.service.forget
        self.processor = TCLIService.Processor(self.service)
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle -----------------------------------------------------------------
    def start(self) -> WarehouseServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.cert_file, self.certs.key_file)
        self._httpd = _HTTPServer((self.hostname, self._port), _Handler, context, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"warehouse-standin-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        self.service.close_all()
        self._thread.join(5)
        try:
            self.db.close()
        except Exception:
            pass

    def __enter__(self) -> WarehouseServer:
        return self if self._httpd else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what clients need ----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.hostname}:{self.port}"

    def connect_kwargs(self, **extra) -> dict:
        """Keyword arguments for ``databricks.sql.connect`` (``extra`` added/overriding)."""
        return {"server_hostname": self.hostname, "http_path": self.http_path,
                "access_token": self.token, "_port": self.port,
                "_tls_trusted_ca_file": str(self.ca_file), **extra}

    def env(self) -> dict[str, str]:
        """Environment for a worker process: the project's ``DATABRICKS_*`` variables,
        ``DATABRICKS_PORT`` (to pass as the connector's ``_port``) and ``SSL_CERT_FILE``
        (how the connector trusts the stand-in's CA without any kwarg)."""
        return {"DATABRICKS_SERVER_HOSTNAME": self.hostname, "DATABRICKS_HTTP_PATH": self.http_path,
                "DATABRICKS_TOKEN": self.token, "DATABRICKS_PORT": str(self.port),
                "SSL_CERT_FILE": str(self.ca_file)}

    def oauth_env(self, client_id: str) -> dict[str, str]:
        """``env()`` for OAuth M2M: ``DATABRICKS_CLIENT_ID``/``DATABRICKS_CLIENT_SECRET``
        (one of ``oauth_clients``) instead of ``DATABRICKS_TOKEN``. The Databricks SDK
        (``requests``) trusts ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, not
        ``SSL_CERT_FILE``: both are emptied here (a machine may set them to its own
        bundle), so the worker has ``SSL_CERT_FILE`` alone, which the engine hands on."""
        env = {k: v for k, v in self.env().items() if k != "DATABRICKS_TOKEN"}
        return {**env, "DATABRICKS_CLIENT_ID": client_id,
                "DATABRICKS_CLIENT_SECRET": self.oauth_clients[client_id],
                "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}

    def state(self) -> dict:
        return {"warehouse": {"url": self.url, "hostname": self.hostname, "port": self.port,
                              "http_path": self.http_path, "ca_file": str(self.ca_file)},
                "stats": self.stats.snapshot(), "faults": self.faults.snapshot()}

    # ---- one Thrift request -----------------------------------------------------------
    def handle_thrift(self, handler: _Handler, body: bytes) -> None:
        method = _peek_method(body)
        agent = handler.headers.get("User-Agent")
        entry = {"path": handler.path, "method": method, "status": None, "user_agent": agent}
        self.stats.record("requests", entry)
        self.stats.record("user_agents", agent)
        auth = handler.headers.get("Authorization")
        if auth != f"Bearer {self.token}" and not self._issued_token(auth):
            status = self.missing_token_status if not auth else 403
            reason = NO_TOKEN if not auth else INVALID_TOKEN
            entry["status"] = status
            handler.reply(status, reason.encode(), "text/plain",
                          {"x-databricks-reason-phrase": reason})
            return
        pause = self.faults.take_delay(method)
        if pause:
            time.sleep(pause)
        fault = self.faults.take_http(method)
        if fault:
            status, headers = fault
            entry["status"] = status
            text = headers.get("x-thriftserver-error-message", "Too Many Requests"
                               if status == 429 else "Service Unavailable")
            handler.reply(status, text.encode(), "text/plain", headers)
            return
        drop = self.faults.take_drop(method)
        if drop and not drop.after_processing:
            entry["status"] = 0
            handler.hang_up()
            return
        try:
            out = self._process(body)
        except Exception as exc:  # not a Thrift message
            entry["status"] = 400
            handler.reply(400, f"Bad Thrift request: {exc}".encode(), "text/plain")
            return
        if drop:
            entry["status"] = 0
            handler.hang_up()
            return
        entry["status"] = 200
        handler.reply(200, out, "application/x-thrift")

    # ---- OAuth M2M: the workspace's token endpoint ----------------------------------------
    def _issued_token(self, auth: str | None) -> bool:
        token = auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None
        with self._lock:
            expiry = self._issued.get(token) if token else None
        return expiry is not None and time.time() < expiry

    def handle_token(self, handler: _Handler, body: bytes) -> None:
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        client_id, secret, how = form.get("client_id"), form.get("client_secret"), "post"
        basic = handler.headers.get("Authorization") or ""
        if basic.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                how = "basic"
            except ValueError:
                client_id = secret = None
        entry = {"client_id": client_id, "auth": how, "grant_type": form.get("grant_type"),
                 "scope": form.get("scope"), "status": None}
        self.stats.record("token_requests", entry)
        fault = self.faults.take_token_error()
        if fault is not None:
            entry["status"] = fault.status
            if fault.error:
                handler.reply_json(fault.status, {"error": fault.error,
                                                  "error_description": "armed by the test"})
            else:
                handler.reply(fault.status, b"Service Unavailable", "text/plain")
            return
        if form.get("grant_type") != "client_credentials":
            entry["status"] = 400
            handler.reply_json(400, {"error": "unsupported_grant_type"})
            return
        if (not client_id or client_id not in self.oauth_clients
                or self.oauth_clients[client_id] != secret):
            entry["status"] = 401
            handler.reply_json(401, {"error": "invalid_client",
                                     "error_description": "Client authentication failed"})
            return
        now = time.time()
        token = jwt.encode({"iss": f"{self.url}/oidc", "sub": client_id, "client_id": client_id,
                            "scope": form.get("scope") or "all-apis", "iat": int(now),
                            "exp": int(now + self.token_ttl), "jti": secrets.token_hex(8)},
                           self._jwt_key, algorithm="HS256")
        with self._lock:
            self._issued[token] = now + self.token_ttl
        entry["status"] = 200
        handler.reply_json(200, {"access_token": token, "token_type": "Bearer",
                                 "expires_in": int(self.token_ttl),
                                 "scope": form.get("scope") or "all-apis"})

    def discovery(self, path: str) -> dict | None:
        """The discovery document at ``path`` that a workspace serves, if any."""
        oidc = f"{self.url}/oidc"
        if path == "/.well-known/databricks-config":
            return {"oidc_endpoint": oidc, "workspace_id": self.workspace_id,
                    "account_id": self.account_id}
        if path == "/oidc/.well-known/oauth-authorization-server":
            return {"issuer": oidc, "authorization_endpoint": f"{oidc}/v1/authorize",
                    "token_endpoint": self.token_endpoint or f"{oidc}/v1/token",
                    "jwks_uri": f"{oidc}/v1/keys", "response_types_supported": ["code"],
                    "grant_types_supported": ["client_credentials", "authorization_code",
                                              "refresh_token"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                              "client_secret_post"],
                    "code_challenge_methods_supported": ["S256"],
                    "scopes_supported": ["all-apis", "sql", "offline_access"]}
        return None

    def _process(self, body: bytes) -> bytes:
        itrans, otrans = TTransport.TMemoryBuffer(body), TTransport.TMemoryBuffer()
        iprot = TBinaryProtocol.TBinaryProtocol(itrans, string_length_limit=None,
                                                container_length_limit=None)
        self.processor.process(iprot, TBinaryProtocol.TBinaryProtocol(otrans))
        return otrans.getvalue()


def _peek_method(body: bytes) -> str | None:
    try:
        return TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body)).readMessageBegin()[0]
    except Exception:
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, context: ssl.SSLContext, owner: WarehouseServer) -> None:
        self.context, self.owner = context, owner
        self._connections: set = set()
        self._lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request, client_address) -> None:
        # TLS handshake here, in the connection's thread, not in the accept loop.
        request.settimeout(10)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        conn.settimeout(None)
        with self._lock:
            self._connections.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close_connections(self) -> None:
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, fmt, *args) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def reply_json(self, status: int, data) -> None:
        self.reply(status, json.dumps(data, default=str).encode(), "application/json")

    def hang_up(self) -> None:
        """Close the TCP connection without an answer (no TLS close_notify either)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_POST(self) -> None:
        owner, path, body = self.server.owner, urlsplit(self.path).path, self._body()
        if path == owner.http_path:
            owner.handle_thrift(self, body)
        elif path == "/oidc/v1/token":
            owner.handle_token(self, body)
        elif path == "/_standin/faults":
            try:
                specs = json.loads(body or b"{}")
                results = [owner.faults.apply(spec)
                           for spec in (specs if isinstance(specs, list) else [specs])]
            except (ValueError, TypeError, RuntimeError) as exc:
                self.reply_json(400, {"error": str(exc)})
                return
            self.reply_json(200, {"results": results, "faults": owner.faults.snapshot()})
        elif path == "/_standin/reset":
            owner.stats.reset()
            owner.faults.clear()
            self.reply_json(200, {"ok": True})
        else:
            self.reply(404, b"Not Found", "text/plain")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        document = self.server.owner.discovery(path)
        if document is not None:
            self.server.owner.stats.record("discovery_requests", {"path": path, "status": 200})
            self.reply_json(200, document)
        elif path == "/_standin/state":
            self.reply_json(200, self.server.owner.state())
        elif path.startswith("/api/2.0/connector-service/feature-flags/"):
            self.reply_json(200, {"flags": [], "ttl_seconds": 900})
        else:
            self.reply(404, b"Not Found", "text/plain")


def start_warehouse(tmp_path: str | Path, *, token: str | None = None,
                    duckdb_path: str | Path | None = None, **options) -> WarehouseServer:
    """Start a stand-in in this process (a daemon thread) with its certificates under
    ``tmp_path/warehouse-certs``; ``options`` go to ``WarehouseServer``. Call ``.stop()``
    when done, e.g. in a pytest fixture::

        @pytest.fixture
        def warehouse(tmp_path):
            wh = start_warehouse(tmp_path, duckdb_path=tmp_path / "wh.duckdb")
            yield wh
            wh.stop()
    """
    return WarehouseServer(Path(tmp_path) / "warehouse-certs", token=token, duckdb_path=duckdb_path,
                           **options).start()


# ---- a stand-in in another process ----------------------------------------------------

def remote_state(url: str, ca_file: str | Path) -> dict:
    """``GET /_standin/state`` of a stand-in at ``url`` (``https://127.0.0.1:PORT``)."""
    return _remote(url, ca_file, "/_standin/state")


def remote_fault(url: str, ca_file: str | Path, action: str, **kwargs) -> dict:
    """Arm a fault on a stand-in at ``url``: ``remote_fault(url, ca, "slow", seconds=3)``."""
    return _remote(url, ca_file, "/_standin/faults", {"action": action, **kwargs})


def _remote(url: str, ca_file, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Databricks SQL warehouse stand-in (DuckDB)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--token", default=None, help="the accepted bearer token (default: random)")
    parser.add_argument("--cert-dir", required=True, help="where ca.pem, server.pem, server.key go")
    parser.add_argument("--duckdb", default=None, help="DuckDB file (default: in memory)")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--warehouse-id", default=None)
    parser.add_argument("--status-wait", type=float, default=1.0,
                        help="GetOperationStatus long-poll, seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    server = WarehouseServer(args.cert_dir, token=args.token, port=args.port,
                             duckdb_path=args.duckdb,
                             read_only=args.read_only, warehouse_id=args.warehouse_id,
                             status_wait=args.status_wait).start()
    # One JSON line: what a client needs (the env of a worker, the URL for /_standin).
    print(json.dumps({"url": server.url, "env": server.env(), "ca_file": str(server.ca_file)}),
          flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
