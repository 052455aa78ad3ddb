"""The Databricks engine: a connection per pooled session, opened from the worker's
settings (:mod:`.config`), with the connector's retries bounded (:mod:`.retries`);
statements run by :class:`~.session.DatabricksSession`, failures mapped by
:func:`~.errors.classify`. Every session says ``agent-turbo/<version>`` in its user agent.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import replace

from ...errors import EngineNotConfigured
from ..base import Engine
from ..pool import Policy
from . import errors
from .auth import SdkCredentials, sdk_credentials
from .config import PAT, DatabricksConfig, credentials_digest
from .retries import retry_args
from .session import DatabricksSession

MAX_STATEMENTS_PER_SESSION = 1000


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agent-turbo")
    except Exception:  # noqa: BLE001 - not installed (a source checkout on sys.path)
        return "0"


USER_AGENT = f"agent-turbo/{_version()}"  # added to the connector's User-Agent


class DatabricksEngine(Engine):
    name = "databricks"
    remote = True
    statement_ids = True  # its sessions know the warehouse's statement id

    def __init__(self, environ: Mapping[str, str] | None = None,
                 policy: Policy = Policy()) -> None:
        self._environ = os.environ if environ is None else environ
        self.policy = policy if policy.max_uses else replace(
            policy, max_uses=MAX_STATEMENTS_PER_SESSION)
        self._credentials: tuple[tuple, SdkCredentials] | None = None
        self._credentials_lock = threading.Lock()

    def key(self):
        """Workspace, warehouse and every setting of the session, with a digest of the
        credentials (never a secret); no error while unconfigured."""
        get = self._environ.get
        return (self.name, get("DATABRICKS_SERVER_HOSTNAME"), get("DATABRICKS_PORT"),
                get("DATABRICKS_HTTP_PATH"), credentials_digest(self._environ),
                get("DATABRICKS_CATALOG"), get("DATABRICKS_SCHEMA"),
                get("DATABRICKS_SESSION_CONF"), get("DATABRICKS_USE_CLOUD_FETCH"),
                get("DATABRICKS_ENABLE_TELEMETRY"))

    def config(self) -> DatabricksConfig:
        return DatabricksConfig.from_environ(self._environ)

    def credentials(self, config: DatabricksConfig) -> SdkCredentials:
        """The SDK's credentials for ``config`` (not a token), one per engine: their token
        is shared by the process's sessions."""
        ident = (config.workspace_url, config.credentials, credentials_digest(self._environ))
        with self._credentials_lock:
            if self._credentials is None or self._credentials[0] != ident:
                self._credentials = (ident, sdk_credentials(config, self._environ))
            return self._credentials[1]

    def connect_args(self, deadline: float | None = None) -> dict:
        """``databricks.sql.connect`` keyword arguments (secrets included: never log them)."""
        config = self.config()
        args: dict = {
            "server_hostname": config.hostname,
            "http_path": config.http_path,
            "_port": config.port,
            "user_agent_entry": USER_AGENT,
            "use_cloud_fetch": config.use_cloud_fetch,
            "enable_telemetry": config.enable_telemetry,
            **retry_args(deadline),
        }
        if config.credentials == PAT:
            args["access_token"] = config.token
        else:
            args["credentials_provider"] = self.credentials(config)
        if config.catalog:
            args["catalog"] = config.catalog
        if config.schema:
            args["schema"] = config.schema
        if config.session_conf:
            args["session_configuration"] = dict(config.session_conf)
        return args

    def connect(self, deadline: float | None = None):
        args = self.connect_args(deadline)
        from databricks import sql as dbsql  # heavy import, worker side only

        try:
            return dbsql.connect(**args)
        except Exception as exc:
            raise self.classify(exc) from exc

    def session(self, connection, *, deadline: float | None = None,
                task_id: str | None = None) -> DatabricksSession:
        return DatabricksSession(connection, deadline=deadline, task_id=task_id)

    def healthy(self, connection) -> bool:
        return bool(getattr(connection, "open", True))  # a local flag, no round trip

    def keeps_connection_after(self, error: BaseException) -> bool:
        return errors.keeps_connection_after(error)

    def stale_connection(self, exc: BaseException) -> bool:
        """The warehouse no longer knows this session (restarted, idle too long): the
        statement never started; a new session can run it (``tasks.sql``)."""
        return errors.stale_session(exc)

    def classify(self, exc: BaseException) -> Exception:
        return errors.classify(exc, self._credential_names)

    def _credential_names(self) -> str:
        try:
            return self.config().credential_names
        except EngineNotConfigured:
            return ("DATABRICKS_TOKEN, DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET or the "
                    "Databricks SDK's settings")
