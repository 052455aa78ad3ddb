"""Databricks engine: configuration and error classification with the connector's own
exception classes. (No warehouse is reachable from here; the query path itself is the
same runner the DuckDB tests drive end to end.)"""
from __future__ import annotations

import pytest
from databricks.sql import exc as dbexc

from tasks.engines.databricks import DatabricksEngine
from tasks.errors import EngineNotConfigured, EngineUnavailable, QueryError, TaskTimeout

ENV = {"DATABRICKS_SERVER_HOSTNAME": "adb-1.azuredatabricks.net",
       "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/abc", "DATABRICKS_TOKEN": "dapi-secret"}


def test_missing_settings_are_named_without_leaking_values():
    engine = DatabricksEngine(environ={"DATABRICKS_TOKEN": "dapi-secret"})
    with pytest.raises(EngineNotConfigured) as raised:
        engine.open()
    message = str(raised.value)
    assert "DATABRICKS_SERVER_HOSTNAME" in message and "DATABRICKS_HTTP_PATH" in message
    assert "DATABRICKS_TOKEN" not in message  # it is set
    assert "dapi-secret" not in message


def test_connect_args_come_from_the_environment():
    args = DatabricksEngine(environ={**ENV, "DATABRICKS_CATALOG": "main"}).connect_args()
    assert args == {"server_hostname": ENV["DATABRICKS_SERVER_HOSTNAME"],
                    "http_path": ENV["DATABRICKS_HTTP_PATH"],
                    "access_token": "dapi-secret", "catalog": "main"}


@pytest.mark.parametrize("error,expected", [
    (dbexc.ServerOperationError(
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found. SQLSTATE: 42P01"),
     QueryError),
    (dbexc.ServerOperationError("[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. "
                                "SQLSTATE: 42601"), QueryError),
    (dbexc.ServerOperationError("[DIVIDE_BY_ZERO] Division by zero. SQLSTATE: 22012"),
     QueryError),
    (dbexc.ServerOperationError("TEMPORARILY_UNAVAILABLE: the warehouse is starting"),
     EngineUnavailable),
    (dbexc.RequestError("Error during request to server: 503 Service Unavailable"),
     EngineUnavailable),
    (dbexc.MaxRetryDurationError("Retry request would exceed Retry policy max retry duration"),
     EngineUnavailable),
    (dbexc.OperationalError("Connection reset by peer"), EngineUnavailable),
    (dbexc.ServerOperationError("Query was cancelled"), TaskTimeout),
    (dbexc.ProgrammingError("Invalid parameter: expected a dict"), QueryError),
])
def test_errors_are_classified(error, expected):
    classified = DatabricksEngine(environ=ENV).classify(error)
    assert type(classified) is expected
    assert str(error) in str(classified)


def test_a_permanent_sqlstate_wins_over_transient_words():
    error = dbexc.ServerOperationError(
        "[UNRESOLVED_COLUMN] column `http_503_count` cannot be resolved. SQLSTATE: 42703")
    assert type(DatabricksEngine(environ=ENV).classify(error)) is QueryError
