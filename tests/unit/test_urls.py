"""Redis URLs (celeryapp/core/urls.py): one set of rules for the app's settings and the
``turbo`` shell; the password helpers agree with the standard library's URL parser."""
from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeryapp.core.urls import RedisURLError, parse_url, redact_url, with_password


@pytest.mark.parametrize("url,password,expected", [
    ("redis://localhost", None, ("redis", "localhost", 6379, None, None, None, 0)),
    ("redis://:s3cret@10.0.0.5:6380/2", None, ("redis", "10.0.0.5", 6380, None, None, "s3cret", 2)),
    ("redis://:s3cret@h/1", "other", ("redis", "h", 6379, None, None, "s3cret", 1)),
    ("redis://h:7000/3", "fromenv", ("redis", "h", 7000, None, None, "fromenv", 3)),
    ("rediss://alice:p%40ss@h:6390/0", None, ("rediss", "h", 6390, None, "alice", "p@ss", 0)),
    ("redis://alice@h/4", "pw", ("redis", "h", 6379, None, "alice", "pw", 4)),
    ("redis://[::1]:6379/5", None, ("redis", "::1", 6379, None, None, None, 5)),
    ("unix:///run/redis.sock?db=3", None, ("unix", "localhost", 0, "/run/redis.sock", None,
                                          None, 3)),
])
def test_parse_url(url, password, expected):
    ep = parse_url(url, password)
    assert (ep.scheme, ep.host, ep.port, ep.path, ep.username, ep.password, ep.db) == expected
    assert "s3cret" not in ep.describe() and "p@ss" not in ep.describe()




@pytest.mark.parametrize("url,needle", [
    ("localhost:6379", "not a Redis URL"),
    ("http://h/0", "unsupported URL scheme"),
    ("redis://h:port/0", "bad port"),
    ("redis://h/x", "bad database number"),
    ("unix://relative/path", "absolute path"),
])
def test_bad_urls_say_what_is_wrong(url, needle):
    with pytest.raises(RedisURLError, match=needle):
        parse_url(url)


# --- the password helpers against urllib.parse (what they were written with before) ------
def _with_password_by_urlsplit(url: str, password: str | None) -> str:
    """As before the rules were shared, but for a ``?password=`` option, which now counts as
    a password the URL carries (the shell's parser always took it)."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.password or not parts.scheme.startswith("redis"):
        return url
    if any(k == "password" and v for k, _, v in
           (item.partition("=") for item in parts.query.split("&"))):
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username or ''}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _redact_by_urlsplit(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.%!~*'()$&+,;=", min_size=1,
                max_size=12)
_urls = st.builds(
    lambda scheme, user, password, host, port, db, query: (
        f"{scheme}://"
        + (f"{user or ''}{':' + password if password is not None else ''}@"
           if user is not None or password is not None else "")
        + f"{host}{':' + str(port) if port else ''}/{db}{'?' + query if query else ''}"),
    st.sampled_from(["redis", "rediss", "amqp"]),
    st.none() | _word,
    st.none() | _word,
    st.sampled_from(["localhost", "10.0.0.5", "redis.example.internal", "[::1]"]),
    st.none() | st.integers(1, 65535),
    st.integers(0, 15),
    st.none() | st.sampled_from(["db=2", "ssl_cert_reqs=required", "password=x"]),
)


@given(url=_urls, password=st.none() | _word)
def test_with_password_agrees_with_urlsplit(url, password):
    assert with_password(url, password) == _with_password_by_urlsplit(url, password)


@given(url=_urls)
def test_redact_agrees_with_urlsplit(url):
    assert redact_url(url) == _redact_by_urlsplit(url)


@given(url=_urls.filter(lambda u: not u.startswith("amqp")), password=st.none() | _word)
def test_a_password_put_in_is_the_one_parsed_out(url, password):
    parsed = parse_url(with_password(url, password))
    original = parse_url(url)
    assert parsed.password == (original.password or password or None)
    assert "***" in redact_url(with_password(url, "s3cret")) or original.password
