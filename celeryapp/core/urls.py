"""Redis URL helpers (standard library only: the lean shell client uses them too)."""
from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def is_redis(url: str | None) -> bool:
    """Whether ``url`` names a Redis server (``redis://`` or ``rediss://``)."""
    return (url or "").startswith(("redis://", "rediss://"))


def with_password(url: str, password: str | None) -> str:
    """Put ``password`` into a redis URL that does not carry one already."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.password or not parts.scheme.startswith("redis"):
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and banners."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
