"""The credentials the connector sends: a personal access token as it is, anything else
through the Databricks SDK's unified authentication (:class:`SdkCredentials`).

``DATABRICKS_TOKEN`` goes to the connector as ``access_token``; nothing here is involved.
Every other way (:mod:`.config`) is the SDK's (``databricks-sdk``), the way Databricks
documents for unattended services: a ``databricks.sdk.config.Config`` for the workspace,
whose credentials provider the connector accepts as ``credentials_provider``. For a
service principal's OAuth client (``oauth-m2m``) the SDK reads the workspace's metadata
(``GET https://<host>/.well-known/databricks-config``), then its OAuth server's
(``GET <oidc_endpoint>/.well-known/oauth-authorization-server``), and asks its token
endpoint (``POST .../oidc/v1/token``, the client-credentials grant, the client
authenticated with HTTP Basic, scope ``all-apis``); fetching, caching and refreshing the
token are the SDK's. Microsoft Entra ID service principals (``azure-client-secret``),
``~/.databrickscfg`` profiles and the SDK's other auth types work the same way, by
configuration only. One SDK ``Config`` per engine, built on the first request that needs
credentials (the SDK's import costs about a second, a worker that uses a token never
pays it); the connector asks it for headers before its requests, and the token is
shared by the process's sessions.

A failure to get credentials is a :class:`~.errors.CredentialsError` raised inside the
connector's request (so no request goes out without credentials), never with a secret
in its message: ``refused`` when no retry can help (the token endpoint answered an
OAuth refusal such as ``invalid_client``, or the SDK found its settings unusable),
otherwise the identity provider was out of reach or failing and a later attempt may
succeed (:func:`~.errors.classify` makes them ``EngineNotConfigured`` and
``EngineUnavailable``).

TLS: the connector (urllib3 on Python's ``ssl``) trusts ``SSL_CERT_FILE``; the SDK uses
``requests``, which trusts ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) and otherwise
certifi's bundle, not ``SSL_CERT_FILE``. So that both trust the same CA, a worker with
``SSL_CERT_FILE`` and neither of those sets ``REQUESTS_CA_BUNDLE`` to the same file in
its own environment when the SDK is first used (:func:`trust_ssl_cert_file_in_requests`);
set ``REQUESTS_CA_BUNDLE`` to choose otherwise.

Known limit of the SDK (databricks-sdk-py#1338): its token request has no timeout, so a
token endpoint that accepts the connection and never answers holds that statement until
its deadline; the SDK's discovery requests are bounded here (:data:`SDK_TIMEOUT_S`).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping

from .config import AUTH_TYPE, CLIENT_ID, OAUTH_M2M, SECRET_SETTINGS, DatabricksConfig
from .errors import CredentialsError

log = logging.getLogger(__name__)

# The SDK's own HTTP requests (discovery): the timeout of each and how long it retries
# one that could not connect (its default: 300 s).
SDK_TIMEOUT_S = 15

_UNREACHABLE_HINT = (" (the workspace's discovery documents could not be read: check "
                     "DATABRICKS_SERVER_HOSTNAME, DATABRICKS_PORT, and REQUESTS_CA_BUNDLE or "
                     "SSL_CERT_FILE for TLS; the SDK's warning in the worker's log says why)")

# What a token endpoint answers when it refuses the client (RFC 6749 section 5.2), as the
# SDK words it: "<error>: <error_description>".
_REFUSAL = re.compile(r"(?:invalid_client|invalid_grant|unauthorized_client|invalid_scope"
                      r"|invalid_request|unsupported_grant_type|access_denied)\b")


class SdkCredentials:
    """The connector's ``credentials_provider`` on the Databricks SDK's unified
    authentication for the workspace at ``host``. ``settings`` are the SDK ``Config``'s
    keyword arguments that the engine read itself (client id and secret, auth type; the
    SDK reads the rest from the environment); ``label`` names the credentials in
    messages; ``secrets`` are kept out of them."""

    def __init__(self, host: str, settings: Mapping[str, str], label: str,
                 secrets: Iterable[str] = ()) -> None:
        self.host, self.label = host, label
        self._settings = dict(settings)
        self._secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        self._config = None  # the SDK's Config, once built

    def __repr__(self) -> str:
        return f"SdkCredentials({self.host!r}, {self.label!r})"

    def auth_type(self) -> str:
        """The SDK's auth type (once known), as the connector's providers say theirs."""
        config = self._config
        return (config.auth_type if config is not None else None) or self._settings.get(
            "auth_type") or "databricks-sdk"

    def __call__(self, *args, **kwargs):
        return self.headers  # the connector calls the provider once, then this per request

    def headers(self) -> dict[str, str]:
        config = self.sdk_config()
        try:
            return config.authenticate()
        except Exception as exc:  # noqa: BLE001 - any failure of the SDK's token fetch
            raise self._failure("gave no credentials", exc, refused=_refusal(exc)) from exc

    def sdk_config(self):
        """The SDK's ``Config``: built once, on first use (a failure is tried again next
        time)."""
        with self._lock:
            if self._config is None:
                trust_ssl_cert_file_in_requests()
                from databricks.sdk.config import Config  # about a second: on first use only

                try:
                    self._config = Config(host=self.host, http_timeout_seconds=SDK_TIMEOUT_S,
                                          retry_timeout_seconds=SDK_TIMEOUT_S,
                                          **self._settings)
                except Exception as exc:  # noqa: BLE001 - any failure of the SDK's setup
                    # unusable settings are refused; the workspace out of reach passes
                    unreachable = _unreachable(exc)
                    raise self._failure("could not set up credentials", exc,
                                        refused=not unreachable,
                                        hint=_UNREACHABLE_HINT if unreachable else "") from exc
            return self._config

    def _failure(self, what: str, exc: BaseException, *, refused: bool,
                 hint: str = "") -> CredentialsError:
        detail = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return CredentialsError(f"the Databricks SDK {what} for {self.host} ({self.label}): "
                                f"{detail}{hint}", refused=refused)


def sdk_credentials(config: DatabricksConfig, environ: Mapping[str, str]) -> SdkCredentials:
    """The SDK's credentials for ``config`` (whose ``credentials`` are not a token): the
    settings the engine read itself, the SDK reading the rest from the environment."""
    m2m = config.credentials == OAUTH_M2M
    settings = {"client_id": config.client_id, "client_secret": config.client_secret,
                "auth_type": config.auth_type or (OAUTH_M2M if m2m else None)}
    if m2m:
        label = f"{OAUTH_M2M}, client {config.client_id}"
    else:
        label = (f"{AUTH_TYPE}={config.auth_type}" if config.auth_type
                 else "the SDK's default credentials")
        if config.client_id:
            label += f", {CLIENT_ID}={config.client_id}"
    return SdkCredentials(config.workspace_url,
                          {name: value for name, value in settings.items() if value}, label,
                          secrets=[environ.get(name) or "" for name in SECRET_SETTINGS])


def trust_ssl_cert_file_in_requests(environ: MutableMapping[str, str] = os.environ) -> None:
    """Give ``requests`` (the SDK) the CA file the connector trusts: ``SSL_CERT_FILE``
    becomes ``REQUESTS_CA_BUNDLE`` unless that or ``CURL_CA_BUNDLE`` is set."""
    cert_file = environ.get("SSL_CERT_FILE")
    if not cert_file or environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE"):
        return
    environ["REQUESTS_CA_BUNDLE"] = cert_file
    log.info("databricks: REQUESTS_CA_BUNDLE=%s (SSL_CERT_FILE) for the Databricks SDK",
             cert_file)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _unreachable(exc: BaseException) -> bool:
    """The SDK could not reach or read its endpoint: a connection or TLS failure, a
    timeout, an HTTP error (``requests``' errors and the SDK's ``DatabricksError`` are
    ``OSError`` s, as ``TimeoutError`` is)."""
    return any(isinstance(e, OSError) for e in _causes(exc))


def _refusal(exc: BaseException) -> bool:
    """The token endpoint refused the credentials (an OAuth error code), rather than
    being out of reach or failing."""
    if _unreachable(exc):
        return False
    return any(_REFUSAL.match(str(e).strip()) for e in _causes(exc))
