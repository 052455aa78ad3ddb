"""A minimal Redis client speaking RESP2 over one socket (standard library only).

Just what ``turbo`` needs: AUTH (password, or ACL user + password), SELECT,
pipelined commands, SUBSCRIBE for waiting on a result, ``rediss://`` through
:mod:`ssl`, timeouts, and errors that say what went wrong. The handshake
(AUTH, SELECT) travels in the same write as the first commands, so a whole
``turbo submit`` costs one connect and one round trip.

``_socket`` is used instead of :mod:`socket`: the wrapper module and the enum
it pulls in cost more to import than the whole submit takes on the wire.
"""
from __future__ import annotations

import _socket
import os

from celeryapp.core import urls
from celeryapp.core.urls import Endpoint

DEFAULT_TIMEOUT = 5.0


class RedisError(Exception):
    """Any failure talking to Redis."""


class RedisUnavailable(RedisError):
    """Redis cannot be reached, timed out, closed the connection or is not Redis."""


class RedisAuthError(RedisError):
    """Redis refused the credentials (or wanted some and got none)."""


class RedisConfigError(RedisError):
    """The URL or the TLS files are unusable: a usage error, not an outage."""


class ReplyError(RedisError):
    """An error reply (``-ERR ...``) to one command."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


def parse_url(url: str, password: str | None = None) -> Endpoint:
    """A Redis URL parsed by the project's rules (:func:`celeryapp.core.urls.parse_url`);
    a URL that cannot be used is a :class:`RedisConfigError` (a usage error)."""
    try:
        return urls.parse_url(url, password)
    except urls.RedisURLError as exc:
        raise RedisConfigError(str(exc)) from None


def encode_command(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection:
    """One socket to one server; AUTH on connect, SELECT when the db changes."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = DEFAULT_TIMEOUT,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None):
        self.endpoint = endpoint
        self.timeout = timeout
        self.tls_files = (tls_ca, tls_cert, tls_key)
        self.sock = None
        self.db = 0
        self._buf = bytearray()
        self._pos = 0

    # --- socket -----------------------------------------------------------------
    def _open(self) -> None:
        ep = self.endpoint
        where = ep.describe()
        try:
            if ep.path:
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(ep.path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = self._open_tcp(ep.host, ep.port)
        except _socket.gaierror as exc:
            raise RedisUnavailable(
                f"Redis is unreachable at {where}: cannot resolve host {ep.host!r} "
                f"({exc.strerror or exc})") from None
        except TimeoutError:
            raise RedisUnavailable(
                f"Redis is unreachable at {where}: no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise RedisUnavailable(
                f"Redis is unreachable at {where}: {exc.strerror or exc}") from None
        sock.settimeout(self.timeout)
        if ep.tls:
            sock = self._wrap_tls(sock)
        self.sock = sock
        self.db = 0
        self._buf, self._pos = bytearray(), 0

    def _open_tcp(self, host: str, port: int):
        last: OSError | None = None
        # bytes: a str host goes through the idna codec, which costs an import
        name = host.encode() if host.isascii() else host
        for family, kind, proto, _, address in _socket.getaddrinfo(
                name, port, 0, _socket.SOCK_STREAM):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        raise last or OSError(f"no address for {host}")

    def _wrap_tls(self, raw):
        import socket
        import ssl

        ca, cert, key = self.tls_files
        where = self.endpoint.describe()
        sock = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        sock.settimeout(self.timeout)
        try:
            context = ssl.create_default_context(cafile=ca or None)
            if cert:
                context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise RedisConfigError(
                f"cannot load the TLS files (TURBO_REDIS_TLS_CA/CERT/KEY): {exc}") from None
        try:
            return context.wrap_socket(sock, server_hostname=self.endpoint.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise RedisUnavailable(
                f"TLS: the certificate of Redis at {where} is not trusted "
                f"({exc.verify_message or exc}); set TURBO_REDIS_TLS_CA to its CA bundle") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise RedisUnavailable(f"TLS handshake with Redis at {where} failed: {exc}") from None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # --- reading ------------------------------------------------------------------
    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            self.close()
            raise RedisUnavailable(
                f"Redis at {self.endpoint.describe()} did not answer within "
                f"{self.timeout:g}s") from None
        except OSError as exc:
            raise self._lost(exc) from None
        if not chunk:
            self.close()
            raise RedisUnavailable(
                f"Redis at {self.endpoint.describe()} closed the connection")
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += chunk

    def _readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos:end])
                self._pos = end + 2
                return line
            self._fill()

    def _readexact(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size + 2:
            self._fill()
        data = bytes(self._buf[self._pos:self._pos + size])
        self._pos += size + 2
        return data

    def read_reply(self):
        """One reply: str (status), bytes, int, list, None, or a ReplyError instance."""
        line = self._readline()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._readexact(size)
        if kind == b"+":
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read_reply() for _ in range(size)]
        if kind == b"-":
            return ReplyError(rest.decode(errors="replace"))
        self.close()
        raise RedisUnavailable(
            f"the server at {self.endpoint.describe()} does not speak the Redis protocol "
            f"(got {line[:40]!r})")

    def has_data(self, timeout: float) -> bool:
        """True when a reply can be read now or arrives within ``timeout`` seconds."""
        if self._pos < len(self._buf):
            return True
        if hasattr(self.sock, "pending") and self.sock.pending():
            return True
        import select

        return bool(select.select([self.sock], [], [], max(0.0, timeout))[0])

    # --- commands -------------------------------------------------------------------
    def send(self, commands) -> None:
        payload = b"".join(encode_command(command) for command in commands)
        try:
            self.sock.sendall(payload)
        except TimeoutError:
            self.close()
            raise RedisUnavailable(
                f"Redis at {self.endpoint.describe()} did not accept data within "
                f"{self.timeout:g}s") from None
        except OSError as exc:
            raise self._lost(exc) from None

    def _lost(self, exc: OSError) -> RedisUnavailable:
        self.close()
        where = self.endpoint.describe()
        # TLS 1.3 servers refuse a missing client certificate after the handshake: the
        # client reads either their alert or, when the close wins the race, a bare EOF
        if "CERTIFICATE_REQUIRED" in str(exc):
            return RedisUnavailable(
                f"Redis at {where} wants a client certificate: set TURBO_REDIS_TLS_CERT "
                f"and TURBO_REDIS_TLS_KEY ({exc})")
        if self.endpoint.tls and not self.tls_files[1] and "EOF occurred" in str(exc):
            return RedisUnavailable(
                f"Redis at {where} closed the TLS connection, as a server that wants a "
                f"client certificate does: set TURBO_REDIS_TLS_CERT and TURBO_REDIS_TLS_KEY "
                f"({exc})")
        return RedisUnavailable(f"lost the connection to Redis at {where}: "
                                f"{exc.strerror or exc}")

    def pipeline(self, commands, db: int | None = None) -> list:
        """Send ``commands`` in one write and return their replies (errors as values)."""
        prefix = []
        if self.sock is None:
            self._open()
            ep = self.endpoint
            if ep.password:
                prefix.append(("AUTH", ep.username, ep.password) if ep.username
                              else ("AUTH", ep.password))
        if db is not None and db != self.db:
            prefix.append(("SELECT", db))
        self.send([*prefix, *commands])
        replies = [self.read_reply() for _ in range(len(prefix) + len(commands))]
        for command, reply in zip(prefix, replies, strict=False):
            if isinstance(reply, ReplyError):
                self.close()
                if command[0] == "AUTH":
                    raise self._auth_error(reply)
                raise ReplyError(f"cannot select database {db} at "
                                 f"{self.endpoint.describe()}: {reply}")
        if db is not None:
            self.db = db
        replies = replies[len(prefix):]
        for reply in replies:
            if isinstance(reply, ReplyError) and reply.code in ("NOAUTH", "WRONGPASS"):
                self.close()
                raise self._auth_error(reply)
        return replies

    def _auth_error(self, reply: ReplyError) -> RedisAuthError:
        where = self.endpoint.describe()
        if reply.code == "NOAUTH":
            return RedisAuthError(
                f"Redis at {where} requires a password: put it in the URL "
                f"(redis://:PASSWORD@host:port/db) or set TURBO_REDIS_PASSWORD")
        who = f"user {self.endpoint.username!r}" if self.endpoint.username else "the password"
        return RedisAuthError(
            f"Redis at {where} refused {who} (check TURBO_REDIS_PASSWORD or the URL): {reply}")


def run_batches(batches) -> list[list]:
    """Run ``[(redis, commands), ...]``, one round trip per connection; raise on errors.

    Commands for databases on the same server share one connection and one
    write (SELECTs go in between); their order is kept. Returns the replies
    per batch.
    """
    by_conn: dict[int, tuple] = {}
    for index, (client, commands) in enumerate(batches):
        conn = client.connection
        by_conn.setdefault(id(conn), (conn, []))[1].append((index, client.db, commands))
    results: list = [None] * len(batches)
    for conn, groups in by_conn.values():
        replies = pipeline_groups(conn, [(db, commands) for _, db, commands in groups])
        for (index, _, _), group_replies in zip(groups, replies, strict=True):
            for reply in group_replies:
                if isinstance(reply, ReplyError):
                    raise reply
            results[index] = group_replies
    return results


def pipeline_groups(conn: Connection, groups) -> list[list]:
    """Several (db, commands) groups in one write on one connection."""
    commands, sizes = [], []
    current = None
    for db, group in groups:
        if current is not None and db != current:
            commands.append(("SELECT", db))
            sizes.append(None)
        current = db
        commands.extend(group)
        sizes.append(len(group))
    first_db = groups[0][0]
    replies = conn.pipeline(commands, db=first_db)
    out, pos = [], 0
    for size in sizes:
        if size is None:
            if isinstance(replies[pos], ReplyError):
                conn.close()
                raise ReplyError(f"cannot select a database: {replies[pos]}")
            pos += 1
            continue
        out.append(replies[pos:pos + size])
        pos += size
    conn.db = current
    return out


_CONNECTIONS: dict[tuple, Connection] = {}


class Redis:
    """A database on a (possibly shared) connection."""

    def __init__(self, connection: Connection, db: int):
        self.connection = connection
        self.db = db

    @property
    def endpoint(self) -> Endpoint:
        return self.connection.endpoint

    def pipeline(self, commands, *, raise_errors: bool = True) -> list:
        replies = self.connection.pipeline(list(commands), db=self.db)
        if raise_errors:
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
        return replies

    def execute(self, *args):
        return self.pipeline([args])[0]

    def dedicated(self) -> Redis:
        """A new connection to the same server (e.g. for SUBSCRIBE)."""
        conn = self.connection
        return Redis(Connection(conn.endpoint, timeout=conn.timeout,
                                tls_ca=conn.tls_files[0], tls_cert=conn.tls_files[1],
                                tls_key=conn.tls_files[2]), self.db)


def connect(url: str, *, password: str | None = None, timeout: float | None = None,
            tls_ca: str | None = None, tls_cert: str | None = None,
            tls_key: str | None = None, shared: bool = True) -> Redis:
    """A client for ``url``; URLs on the same server share one connection."""
    endpoint = parse_url(url, password)
    if timeout is None:
        text = os.environ.get("TURBO_REDIS_TIMEOUT") or DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise RedisConfigError(
                f"TURBO_REDIS_TIMEOUT must be a number of seconds, got {text!r}") from None
    key = (endpoint.server, tls_ca, tls_cert, tls_key)
    conn = _CONNECTIONS.get(key) if shared else None
    if conn is None:
        conn = Connection(endpoint, timeout=timeout, tls_ca=tls_ca, tls_cert=tls_cert,
                          tls_key=tls_key)
        if shared:
            _CONNECTIONS[key] = conn
    return Redis(conn, endpoint.db)


def close_all() -> None:
    while _CONNECTIONS:
        _CONNECTIONS.popitem()[1].close()
