"""Redis URLs: one set of rules for the worker side (settings, the app's config, Flower)
and the ``turbo`` shell's own client (``celeryapp/shell/resp.py``).

Standard library only, and nothing imported up front that a ``turbo`` call would pay for
(``urllib.parse`` only when a URL holds ``%`` escapes or a password is added).

Forms: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
``unix:///path/to/redis.sock?db=N`` (also kombu's ``redis+socket://``); a ``?password=``
option counts when the userinfo has none.
"""
from __future__ import annotations

SCHEMES = ("redis", "rediss", "unix", "redis+socket")
TCP_SCHEMES = ("redis", "rediss")
SOCKET_SCHEMES = ("unix", "redis+socket")


class RedisURLError(ValueError):
    """A Redis URL that cannot be used as it is written."""


def _unquote(text: str) -> str:
    if "%" not in text:
        return text
    from urllib.parse import unquote

    return unquote(text)


def _split(url: str) -> tuple[str, str | None, str]:
    """``(scheme, userinfo or None, the rest)`` of ``scheme://[userinfo@]rest``. The
    userinfo ends at the last ``@`` of the authority, which ends at the first ``/``, ``?``
    or ``#`` (a socket URL's path, which starts with ``/``, follows the ``@``)."""
    scheme, _, rest = url.partition("://")
    marks = "?#" if scheme.lower() in SOCKET_SCHEMES else "/?#"
    end = min([rest.find(mark) for mark in marks if mark in rest] or [len(rest)])
    if "@" not in rest[:end]:
        return scheme, None, rest
    userinfo, _, host = rest[:end].rpartition("@")
    return scheme, userinfo, host + rest[end:]


def _query_password(rest: str) -> bool:
    query = rest.partition("#")[0].partition("?")[2]
    return any(item.partition("=")[0] == "password" and item.partition("=")[2]
               for item in query.split("&") if query)


def is_redis(url: str | None) -> bool:
    """Whether ``url`` names a Redis server over TCP (``redis://`` or ``rediss://``)."""
    return (url or "").startswith(tuple(f"{scheme}://" for scheme in TCP_SCHEMES))


def with_password(url: str, password: str | None) -> str:
    """Put ``password`` into a redis URL that does not carry one already (in its userinfo
    or as a ``?password=`` option: redis-py would let the userinfo win over that option,
    :func:`parse_url` and the ``turbo`` shell take the option)."""
    if not password or "://" not in url:
        return url
    scheme, userinfo, rest = _split(url)
    scheme = scheme.lower()
    if not scheme.startswith("redis"):
        return url
    user, has_colon, secret = (userinfo or "").partition(":")
    if (has_colon and secret) or _query_password(rest):
        return url
    from urllib.parse import quote

    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and banners."""
    if "://" not in url:
        return url
    scheme, userinfo, rest = _split(url)
    user, has_colon, secret = (userinfo or "").partition(":")
    if not (has_colon and secret):
        return url
    return f"{scheme.lower()}://{user}:***@{rest}"


class Endpoint:
    """One Redis URL, parsed: where the server is, who we are, which db."""

    __slots__ = ("scheme", "host", "port", "path", "username", "password", "db")

    def __init__(self, scheme="redis", host="localhost", port=6379, path=None,
                 username=None, password=None, db=0):
        self.scheme, self.host, self.port, self.path = scheme, host, port, path
        self.username, self.password, self.db = username, password, db

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def server(self) -> tuple:
        """What identifies one connection (the db is chosen per command)."""
        return (self.scheme, self.host, self.port, self.path, self.username, self.password)

    def describe(self) -> str:
        """The URL without secrets, for messages."""
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{host}:{self.port}/{self.db}"

    def __repr__(self) -> str:
        return f"Endpoint({self.describe()})"


def parse_url(url: str, password: str | None = None) -> Endpoint:
    """Parse a Redis URL (the forms in the module docstring); ``password`` is used only
    when the URL carries none. Raises :class:`RedisURLError` saying what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise RedisURLError(f"not a Redis URL: {url!r} (expected redis://host:port/db)")
    scheme, userinfo, rest = _split(url)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise RedisURLError(
            f"unsupported URL scheme {scheme!r} in a Redis URL; use one of {', '.join(SCHEMES)}")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    options = {}
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        options[key] = _unquote(value)
    if scheme in SOCKET_SCHEMES:
        db_text = options.get("db", "0")
        host, port = "localhost", 0
        path = _unquote(rest)
        if not path.startswith("/"):
            raise RedisURLError(f"a unix socket URL needs an absolute path: {url!r}")
    else:
        hostport, _, path_part = rest.partition("/")
        db_text = path_part.strip("/") or options.get("db", "0")
        path = None
        if hostport.startswith("["):
            host, _, after = hostport[1:].partition("]")
            port_text = after[1:] if after.startswith(":") else ""
        else:
            host, _, port_text = hostport.partition(":")
        host = _unquote(host) or "localhost"
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            raise RedisURLError(f"bad port {port_text!r} in Redis URL") from None
    try:
        db = int(db_text)
    except ValueError:
        raise RedisURLError(f"bad database number {db_text!r} in Redis URL") from None
    username = url_password = None
    if userinfo:
        user, has_colon, secret = userinfo.partition(":")
        username = _unquote(user) or None
        url_password = _unquote(secret) if has_colon else None
    if options.get("password"):
        url_password = url_password or options["password"]
    return Endpoint(scheme, host, port, path, username, url_password or password or None, db)
