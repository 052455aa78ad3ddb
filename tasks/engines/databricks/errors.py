"""What a failure of the connector means for the task (:func:`classify`), decided by
the first of these steps that recognises it:

1. our own cancel, or the warehouse's CANCELED state: :class:`TaskTimeout`;
2. credentials: refused (HTTP 401/403, an identity provider's refusal, settings the
   Databricks SDK cannot use: :class:`CredentialsError`) are :class:`EngineNotConfigured`,
   never retried; an identity provider out of reach is :class:`EngineUnavailable`;
3. an SQLSTATE, before any word of the message: class 42/22/... :class:`QueryError`,
   ``HY008`` cancelled, 08/40/53/57 :class:`EngineUnavailable`;
4. a cancelled statement told in words: :class:`TaskTimeout`;
5. HTTP 400/404 (a wrong host, port or path) and an untrusted TLS certificate:
   :class:`EngineNotConfigured`; a request the connector would not re-send:
   :class:`QueryError`;
6. what passes (transport errors, 429/503, a starting warehouse, a forgotten session, a
   lost result page, the connector's retries cut short by the deadline):
   :class:`EngineUnavailable`;

anything else is a :class:`QueryError`.
"""
from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ...errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout

_SQLSTATE = re.compile(r"SQLSTATE:?\s*([0-9A-Z]{5})")
# SQLSTATE classes that no retry can fix: syntax/access (42), data (22),
# cardinality (21), constraints (23), invalid transaction/cursor (24/25/2D), feature (0A),
# protocol violation (08P).
_PERMANENT_CLASSES = {"42", "22", "21", "23", "24", "25", "2D", "0A", "08P"}
# ...and those that pass: connection exception (08, but 08P), transaction rollback /
# serialization failure (40), insufficient resources (53), operator intervention (57).
_TRANSIENT_CLASSES = {"08", "40", "53", "57"}
_CANCELLED_STATE = "HY008"  # "operation canceled" (ODBC; the stand-in reports it too)
# A cancelled statement in words: "canceled"/"cancelled" as a word of its own, not a part
# of a name such as `cancelled_at` (SQLSTATE is looked at first in any case).
_CANCELLED = re.compile(r"(?<![\w`'\"])cancell?ed(?![\w`'\"])", re.I)
_TRANSIENT = re.compile(
    r"temporarily[_ ]unavailable|is starting|resource_exhausted|too many requests"
    r"|service unavailable|connection (?:reset|refused|aborted)|timed out"
    r"|invalid sessionhandle|invalid operationhandle|unexpectedly closed server side"
    r"|expected results to start from|\b(?:429|503)\b", re.I)
_STALE_SESSION = re.compile(r"invalid sessionhandle", re.I)


class StatementCancelled(Exception):
    """The statement was cancelled: on request (a timeout, a revoke) or at the warehouse."""


class CredentialsError(Exception):
    """No credentials for the connector's request (:mod:`.auth`): ``refused`` when no
    retry can help (the identity provider refused them, or their settings are unusable),
    otherwise the identity provider was out of reach or failing."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


def classify(exc: BaseException, credential_names: Callable[[], str]) -> Exception:
    """The Turbo error for ``exc``, by the first step that recognises it (in this order);
    ``credential_names()`` says what to check when the credentials are refused."""
    failure = _Failure.of(exc)
    return (_cancelled(failure)
            or _credentials_refused(failure, credential_names)
            or _by_sqlstate(failure)
            or _cancelled_in_words(failure)
            or _misaddressed(failure)
            or _untrusted_tls(failure)
            or _unsafe_to_retry(failure)
            or _passing(failure)
            or QueryError(f"databricks: {failure.message}"))


@dataclass(frozen=True)
class _Failure:
    """An exception as the steps of :func:`classify` look at it."""

    error: BaseException
    chain: tuple[BaseException, ...]  # the error, what it carries, its causes
    message: str
    status: int | None  # the HTTP status the connector saw, if any

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        return cls(exc, tuple(exception_chain(exc)), _text(exc) or type(exc).__name__,
                   _http_status(exc))

    def first(self, kind: type[BaseException]) -> BaseException | None:
        return next((e for e in self.chain if isinstance(e, kind)), None)

    def has(self, kind: type[BaseException]) -> bool:
        return self.first(kind) is not None


def _cancelled(failure: _Failure) -> Exception | None:
    """Our own cancel, or the warehouse's CANCELED state."""
    if failure.has(StatementCancelled):
        return TaskTimeout(f"databricks statement cancelled: {failure.message}")
    return None


def _credentials_refused(failure: _Failure, credential_names: Callable[[], str]
                         ) -> Exception | None:
    """Refused credentials are never retried; an identity provider out of reach passes."""
    error = failure.first(CredentialsError)
    if error is not None:
        if error.refused:
            return EngineNotConfigured(
                f"databricks: {error}; check {credential_names()} on this worker (expired or "
                "revoked? of this workspace?)")
        return EngineUnavailable(f"databricks unavailable: {error}")
    if failure.status in (401, 403):
        return EngineNotConfigured(
            f"databricks refused the credentials (HTTP {failure.status}"
            f"{_reason(failure.error)}): check {credential_names()} on this worker (expired "
            "or revoked? of this workspace? allowed to use this warehouse?)")
    return None


def _by_sqlstate(failure: _Failure) -> Exception | None:
    """An SQLSTATE decides before any word of the message."""
    sqlstate = next(filter(None, (sqlstate_of(_text(e)) for e in failure.chain)), None)
    if not sqlstate:
        return None
    if sqlstate == _CANCELLED_STATE:
        return TaskTimeout(f"databricks statement cancelled: {failure.message}")
    if sqlstate[:2] in _PERMANENT_CLASSES or sqlstate[:3] in _PERMANENT_CLASSES:
        return QueryError(f"databricks [{sqlstate}]: {failure.message}")
    if sqlstate[:2] in _TRANSIENT_CLASSES:
        return EngineUnavailable(f"databricks unavailable [{sqlstate}]: {failure.message}")
    return None


def _cancelled_in_words(failure: _Failure) -> Exception | None:
    from databricks.sql import exc as dbexc

    if isinstance(failure.error, dbexc.DatabaseError) and _CANCELLED.search(failure.message):
        return TaskTimeout(f"databricks statement cancelled: {failure.message}")
    return None


def _misaddressed(failure: _Failure) -> Exception | None:
    """HTTP 400/404 from the warehouse's address: a wrong host, port or path (but a
    retry cut short by the deadline carries a stale status)."""
    from databricks.sql import exc as dbexc

    if failure.status in (400, 404) and not failure.has(dbexc.MaxRetryDurationError):
        return EngineNotConfigured(
            f"databricks answered HTTP {failure.status}{_reason(failure.error)}: check "
            "DATABRICKS_SERVER_HOSTNAME, DATABRICKS_PORT and DATABRICKS_HTTP_PATH")
    return None


def _untrusted_tls(failure: _Failure) -> Exception | None:
    tls = next((e for e in failure.chain if isinstance(e, ssl.SSLCertVerificationError)
                or "CERTIFICATE_VERIFY_FAILED" in _text(e)), None)
    if tls is None:
        return None
    return EngineNotConfigured(
        f"databricks: the warehouse's TLS certificate was not trusted ({_text(tls)}): "
        "check DATABRICKS_SERVER_HOSTNAME, and SSL_CERT_FILE behind a proxy")


def _unsafe_to_retry(failure: _Failure) -> Exception | None:
    """The connector would not re-send it: the warehouse may have acted on it."""
    from databricks.sql import exc as dbexc

    if isinstance(failure.error, dbexc.UnsafeToRetryError):
        return QueryError(f"databricks: {failure.message}")
    return None


def _passing(failure: _Failure) -> Exception | None:
    """What passes: the wire, a busy or starting warehouse, a forgotten session."""
    from databricks.sql import exc as dbexc

    message = failure.message
    if failure.has(dbexc.MaxRetryDurationError):
        return EngineUnavailable(
            "databricks unavailable (busy, starting or unreachable; the connector's next "
            f"retry would have outlasted the call's deadline): {message}")
    if (isinstance(failure.error, (dbexc.RequestError, dbexc.OperationalError))
            or any(_is_transport_error(e) for e in failure.chain)
            or _TRANSIENT.search(message)):
        return EngineUnavailable(f"databricks unavailable: {message}")
    return None


def keeps_connection_after(error: BaseException) -> bool:
    """The warehouse judged the statement (an SQL error with its SQLSTATE) or the
    connector refused its parameters before sending it: the session is as good as
    before."""
    from databricks.sql import exc as dbexc

    cause = error.__cause__
    if isinstance(cause, dbexc.ServerOperationError):
        return sqlstate_of(str(cause)) is not None
    return isinstance(cause, (dbexc.ProgrammingError, dbexc.NotSupportedError))


def stale_session(exc: BaseException) -> bool:
    """The warehouse no longer knows the session (restarted, idle too long)."""
    return any(_STALE_SESSION.search(_text(e)) for e in exception_chain(exc))


# --- the exception chain -------------------------------------------------------------------
def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, the exceptions it carries (the connector puts the original one in
    ``args[1]``) and its causes, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.append(getattr(current, "reason", None) if isinstance(
            getattr(current, "reason", None), BaseException) else None)
        todo.extend((current.__cause__, current.__context__))


def _text(exc: BaseException) -> str:
    try:
        return str(exc).strip()
    except Exception:  # noqa: BLE001 - a __str__ that fails: the type names it
        return type(exc).__name__


def sqlstate_of(message: str) -> str | None:
    found = _SQLSTATE.search(message)
    return found.group(1) if found else None


def _http_status(exc: BaseException) -> int | None:
    context = getattr(exc, "context", None)
    code = context.get("http-code") if isinstance(context, dict) else None
    return code if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    context = getattr(exc, "context", None)
    reason = context.get("error-message") if isinstance(context, dict) else None
    reason = (reason or "").strip(" :")
    return f": {reason}" if reason else ""


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, EOFError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLCertVerificationError):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("urllib3", "http.client", "thrift"))
