"""The engine's settings, from the worker's environment only, never from task arguments.

``DATABRICKS_SERVER_HOSTNAME`` and ``DATABRICKS_HTTP_PATH`` name the warehouse, and
either ``DATABRICKS_TOKEN`` (a personal access token) or ``DATABRICKS_CLIENT_ID`` +
``DATABRICKS_CLIENT_SECRET`` (OAuth machine-to-machine for a service principal) the
credentials; optional ``DATABRICKS_PORT``, ``DATABRICKS_CATALOG``, ``DATABRICKS_SCHEMA``,
``DATABRICKS_SESSION_CONF`` (:func:`parse_session_conf`), ``DATABRICKS_USE_CLOUD_FETCH``,
``DATABRICKS_ENABLE_TELEMETRY``. A setting that is missing or malformed is an
:class:`~tasks.errors.EngineNotConfigured` naming it, never its value.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...errors import EngineNotConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_CONF_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_TIMESTAMP_AS_STRING = "spark.thriftserver.arrowBasedRowSet.timestampAsString"


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

    @property
    def oauth(self) -> bool:
        return self.token is None

    @property
    def credential_names(self) -> str:
        """What to check when the warehouse refuses the credentials."""
        if self.oauth:
            return ("DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (the OAuth client of a "
                    "service principal)")
        return "DATABRICKS_TOKEN"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DatabricksConfig:
        def get(name: str) -> str | None:
            value = (environ.get(name) or "").strip()
            return value or None

        hostname, http_path = get("DATABRICKS_SERVER_HOSTNAME"), get("DATABRICKS_HTTP_PATH")
        token = get("DATABRICKS_TOKEN")
        client_id, client_secret = get("DATABRICKS_CLIENT_ID"), get("DATABRICKS_CLIENT_SECRET")
        missing = [name for name, value in (("DATABRICKS_SERVER_HOSTNAME", hostname),
                                            ("DATABRICKS_HTTP_PATH", http_path)) if not value]
        if token and (client_id or client_secret):
            raise EngineNotConfigured(
                "databricks engine: set either DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID + "
                "DATABRICKS_CLIENT_SECRET (OAuth M2M) in the worker's environment, not both")
        if not token:
            if client_id or client_secret:
                missing += [name for name, value in (("DATABRICKS_CLIENT_ID", client_id),
                                                     ("DATABRICKS_CLIENT_SECRET", client_secret))
                            if not value]
            else:
                missing.append("DATABRICKS_TOKEN (or DATABRICKS_CLIENT_ID + "
                               "DATABRICKS_CLIENT_SECRET for OAuth M2M)")
        if missing:
            raise EngineNotConfigured(
                "databricks engine is not configured on this worker: set "
                + ", ".join(missing) + " in the worker's environment")
        hostname = re.sub(r"^https?://", "", hostname).rstrip("/")
        if ":" in hostname or "/" in hostname:
            raise EngineNotConfigured(
                f"DATABRICKS_SERVER_HOSTNAME={hostname!r}: give the host name alone "
                "(e.g. adb-123.4.azuredatabricks.net); a port goes in DATABRICKS_PORT")
        port_text = get("DATABRICKS_PORT") or "443"
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise EngineNotConfigured(
                f"DATABRICKS_PORT={port_text!r} is not a TCP port (1-65535)") from None
        return cls(hostname=hostname, http_path=http_path, port=port, token=token,
                   client_id=None if token else client_id,
                   client_secret=None if token else client_secret,
                   catalog=get("DATABRICKS_CATALOG"), schema=get("DATABRICKS_SCHEMA"),
                   session_conf=parse_session_conf(get("DATABRICKS_SESSION_CONF")),
                   use_cloud_fetch=_flag(environ, "DATABRICKS_USE_CLOUD_FETCH", True),
                   enable_telemetry=_flag(environ, "DATABRICKS_ENABLE_TELEMETRY", False))


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
