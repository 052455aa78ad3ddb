"""The engine's settings, from the worker's environment only, never from task arguments.

Read by the engine itself (:meth:`DatabricksConfig.from_environ`):

* the warehouse: ``DATABRICKS_SERVER_HOSTNAME``, ``DATABRICKS_HTTP_PATH``, optional
  ``DATABRICKS_PORT``, ``DATABRICKS_CATALOG``, ``DATABRICKS_SCHEMA``,
  ``DATABRICKS_SESSION_CONF`` (:func:`parse_session_conf`), ``DATABRICKS_USE_CLOUD_FETCH``,
  ``DATABRICKS_ENABLE_TELEMETRY``: the connector's settings;
* which credentials, checked before anything is sent (:func:`which_credentials`):
  ``DATABRICKS_TOKEN`` (a personal access token, sent by the connector as it is), or
  ``DATABRICKS_CLIENT_ID`` + ``DATABRICKS_CLIENT_SECRET`` (OAuth machine-to-machine for a
  Databricks service principal, through the Databricks SDK: :mod:`.auth`), or else the
  SDK's unified authentication, chosen by ``DATABRICKS_AUTH_TYPE``,
  ``DATABRICKS_CONFIG_PROFILE`` or one of the SDK's own credential variables
  (:data:`SDK_CREDENTIAL_SETTINGS`: ``ARM_CLIENT_ID`` + ``ARM_CLIENT_SECRET`` +
  ``ARM_TENANT_ID`` for a Microsoft Entra ID service principal, ...). A token together
  with another way is refused, naming both; no way at all names the ways there are.

Left to the SDK's ``Config``, which reads them from the process environment itself:
every other setting of the SDK's unified authentication (the ``ARM_*`` and Google
variables, ``DATABRICKS_CONFIG_FILE``, the profile's contents in ``~/.databrickscfg``,
``ARM_ENVIRONMENT``, ...); the engine gives it the workspace's address
(``https://<DATABRICKS_SERVER_HOSTNAME>[:DATABRICKS_PORT]``), the service principal's
client id and secret, and the auth type (``oauth-m2m`` for those two, unless
``DATABRICKS_AUTH_TYPE`` says otherwise). An engine built with an ``environ`` of its own
(tests) still leaves the SDK to read the process environment for the rest.

A setting that is missing or malformed is an :class:`~tasks.errors.EngineNotConfigured`
naming it, never its value. The engine's key holds a digest of every credential setting
(:func:`credentials_digest`), never a value.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ...errors import EngineNotConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_CONF_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_TIMESTAMP_AS_STRING = "spark.thriftserver.arrowBasedRowSet.timestampAsString"

TOKEN = "DATABRICKS_TOKEN"
CLIENT_ID, CLIENT_SECRET = "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"
AUTH_TYPE, PROFILE = "DATABRICKS_AUTH_TYPE", "DATABRICKS_CONFIG_PROFILE"
# The SDK's credential variables besides the three above: the environment names of its
# Config attributes that belong to an auth type (tests/unit/test_databricks_engine.py
# checks the list against the installed SDK).
SDK_CREDENTIAL_SETTINGS = (
    "ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_TENANT_ID", "ARM_USE_MSI",
    "DATABRICKS_AZURE_RESOURCE_ID", "GOOGLE_CREDENTIALS", "DATABRICKS_GOOGLE_SERVICE_ACCOUNT",
    "DATABRICKS_OIDC_TOKEN_ENV", "DATABRICKS_OIDC_TOKEN_FILEPATH", "DATABRICKS_OIDC_TOKEN_FILE",
    "DATABRICKS_METADATA_SERVICE_URL", "DATABRICKS_USERNAME", "DATABRICKS_PASSWORD")
# Every setting the credentials depend on (the engine's key holds a digest of them).
CREDENTIAL_SETTINGS = (TOKEN, CLIENT_ID, CLIENT_SECRET, AUTH_TYPE, PROFILE,
                       "DATABRICKS_CONFIG_FILE", "ARM_ENVIRONMENT", *SDK_CREDENTIAL_SETTINGS)
# Those whose value is a secret (the SDK's "sensitive" attributes): kept out of messages.
SECRET_SETTINGS = (TOKEN, CLIENT_SECRET, "ARM_CLIENT_SECRET", "GOOGLE_CREDENTIALS",
                   "DATABRICKS_METADATA_SERVICE_URL", "DATABRICKS_PASSWORD")
_NO_CREDENTIALS = (f"{TOKEN} (or {CLIENT_ID} + {CLIENT_SECRET} for OAuth M2M, or the "
                   f"Databricks SDK's unified authentication: {AUTH_TYPE}, {PROFILE}, or "
                   "ARM_CLIENT_ID + ARM_CLIENT_SECRET + ARM_TENANT_ID for a Microsoft Entra ID "
                   "service principal)")

# How the engine authenticates (DatabricksConfig.credentials)
PAT, OAUTH_M2M, SDK = "token", "oauth-m2m", "sdk"


@dataclass(frozen=True)
class DatabricksConfig:
    """The engine's settings, read from the worker's environment (:meth:`from_environ`)."""

    hostname: str
    http_path: str
    port: int = 443
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    catalog: str | None = None
    schema: str | None = None
    session_conf: Mapping[str, str] = field(default_factory=dict)
    use_cloud_fetch: bool = True
    enable_telemetry: bool = False
    credentials: str = PAT  # PAT, OAUTH_M2M or SDK
    auth_type: str | None = None  # DATABRICKS_AUTH_TYPE
    sdk_settings: tuple[str, ...] = ()  # the SDK variables that are set (names only)

    @property
    def workspace_url(self) -> str:
        """The workspace's address, as the SDK wants it."""
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{self.hostname}{port}"

    @property
    def credential_names(self) -> str:
        """What to check when the credentials are refused."""
        if self.credentials == PAT:
            return TOKEN
        if self.credentials == OAUTH_M2M:
            return (f"{CLIENT_ID} and {CLIENT_SECRET} (the OAuth client of a service "
                    "principal)")
        named = [f"{AUTH_TYPE}={self.auth_type}"] if self.auth_type else []
        named += [name for name in self.sdk_settings if name != AUTH_TYPE]
        return f"the Databricks SDK's settings ({', '.join(named)})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DatabricksConfig:
        def get(name: str) -> str | None:
            value = (environ.get(name) or "").strip()
            return value or None

        hostname, http_path = get("DATABRICKS_SERVER_HOSTNAME"), get("DATABRICKS_HTTP_PATH")
        missing = [name for name, value in (("DATABRICKS_SERVER_HOSTNAME", hostname),
                                            ("DATABRICKS_HTTP_PATH", http_path)) if not value]
        credentials, missing_credentials = which_credentials(get)
        missing += missing_credentials
        if missing:
            raise EngineNotConfigured(
                "databricks engine is not configured on this worker: set "
                + ", ".join(missing) + " in the worker's environment")
        hostname = re.sub(r"^https?://", "", hostname).rstrip("/")
        if ":" in hostname or "/" in hostname:
            raise EngineNotConfigured(
                f"DATABRICKS_SERVER_HOSTNAME={hostname!r}: give the host name alone "
                "(e.g. adb-123.4.azuredatabricks.net); a port goes in DATABRICKS_PORT")
        with_client = credentials != PAT
        return cls(hostname=hostname, http_path=http_path, port=_port(get("DATABRICKS_PORT")),
                   token=get(TOKEN) if credentials == PAT else None,
                   client_id=get(CLIENT_ID) if with_client else None,
                   client_secret=get(CLIENT_SECRET) if with_client else None,
                   catalog=get("DATABRICKS_CATALOG"), schema=get("DATABRICKS_SCHEMA"),
                   session_conf=parse_session_conf(get("DATABRICKS_SESSION_CONF")),
                   use_cloud_fetch=_flag(environ, "DATABRICKS_USE_CLOUD_FETCH", True),
                   enable_telemetry=_flag(environ, "DATABRICKS_ENABLE_TELEMETRY", False),
                   credentials=credentials or PAT, auth_type=get(AUTH_TYPE),
                   sdk_settings=tuple(name for name in (AUTH_TYPE, PROFILE,
                                                        *SDK_CREDENTIAL_SETTINGS)
                                      if get(name)))


def which_credentials(get: Callable[[str], str | None]) -> tuple[str | None, list[str]]:
    """How the engine authenticates (:data:`PAT`, :data:`OAUTH_M2M` or :data:`SDK`), or
    None and the settings to set; two ways at once are refused."""
    token, client_id, client_secret = get(TOKEN), get(CLIENT_ID), get(CLIENT_SECRET)
    auth_type = get(AUTH_TYPE)
    if token:
        if client_id or client_secret:
            raise EngineNotConfigured(
                f"databricks engine: set either {TOKEN} or {CLIENT_ID} + {CLIENT_SECRET} "
                "(OAuth M2M) in the worker's environment, not both")
        if auth_type and auth_type != "pat":
            raise EngineNotConfigured(
                f"databricks engine: set either {TOKEN} or {AUTH_TYPE}={auth_type} (the "
                "Databricks SDK's unified authentication) in the worker's environment, not both")
        return PAT, []
    if auth_type == OAUTH_M2M or (auth_type is None and (client_id or client_secret)):
        missing = [name for name, value in ((CLIENT_ID, client_id),
                                            (CLIENT_SECRET, client_secret)) if not value]
        return (None if missing else OAUTH_M2M), missing
    if client_id or client_secret or any(get(name) for name in (AUTH_TYPE, PROFILE,
                                                                *SDK_CREDENTIAL_SETTINGS)):
        return SDK, []
    return None, [_NO_CREDENTIALS]


def credentials_digest(environ: Mapping[str, str]) -> str | None:
    """A digest of every credential setting that is set (:data:`CREDENTIAL_SETTINGS`):
    it changes with any of them and shows none."""
    values = [(name, environ[name]) for name in CREDENTIAL_SETTINGS
              if (environ.get(name) or "").strip()]
    if not values:
        return None
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def _port(text: str | None) -> int:
    text = text or "443"
    try:
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise EngineNotConfigured(
            f"DATABRICKS_PORT={text!r} is not a TCP port (1-65535)") from None
    return port


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = (environ.get(name) or "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EngineNotConfigured(f"{name}={environ.get(name)!r} is not a boolean: use true or false")


def parse_session_conf(text: str | None) -> dict[str, str]:
    """``DATABRICKS_SESSION_CONF``: ``key=value`` pairs separated by commas
    (``ansi_mode=true,timezone=UTC``; spaces around keys and values are dropped, a
    value may contain ``=``); the session's Spark configuration at the warehouse."""
    conf: dict[str, str] = {}
    if not text or not text.strip():
        return conf
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _CONF_KEY.match(key):
            raise EngineNotConfigured(
                f"DATABRICKS_SESSION_CONF: {item.strip()!r} is not key=value; write "
                "key=value pairs separated by commas, e.g. ansi_mode=true,timezone=UTC")
        if key in conf:
            raise EngineNotConfigured(f"DATABRICKS_SESSION_CONF sets {key!r} twice")
        if key.lower() == _TIMESTAMP_AS_STRING.lower() and value.lower() != "false":
            raise EngineNotConfigured(
                f"DATABRICKS_SESSION_CONF: the connector requires {_TIMESTAMP_AS_STRING}=false")
        conf[key] = value
    return conf
