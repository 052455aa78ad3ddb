"""Databricks SQL warehouses through databricks-sql-connector (Thrift over HTTPS).

One module per concern:

* :mod:`.config` - the settings, from the worker's environment only (``DATABRICKS_*``);
* :mod:`.auth` - the credentials the connector sends: a token, or the Databricks SDK's;
* :mod:`.retries` - the connector's own 429/503 retries, bounded by the call's deadline;
* :mod:`.session` - one statement: run asynchronously, polled, cancelled from any thread;
* :mod:`.errors` - what a failure means for the task (:func:`~.errors.classify`);
* :mod:`.engine` - :class:`DatabricksEngine`, what the engine registry builds.
"""
from __future__ import annotations

from .auth import SdkCredentials
from .config import DatabricksConfig, parse_session_conf
from .engine import USER_AGENT, DatabricksEngine
from .errors import CredentialsError, StatementCancelled
from .retries import bound_retries
from .session import DatabricksSession

__all__ = ["USER_AGENT", "CredentialsError", "DatabricksConfig", "DatabricksEngine",
           "DatabricksSession", "SdkCredentials", "StatementCancelled", "bound_retries",
           "parse_session_conf"]
