"""The ``TCLIService`` handler of the warehouse stand-in: sessions and operations on DuckDB.

Each ExecuteStatement becomes an operation run by its own thread on its own DuckDB
connection (``db.cursor()``), so CancelOperation can ``interrupt()`` it. States follow the
Databricks Thrift server: PENDING -> RUNNING -> FINISHED | ERROR_STATE (with ``sqlState``,
``errorMessage``, ``displayMessage``) | CANCELED (OK status, no message) -> CLOSED.

GetOperationStatus long-polls: it answers as soon as the state changes, or after
``status_wait`` seconds with the unchanged state. A synchronous ExecuteStatement
(``getDirectResults`` set) waits up to ``status_wait`` too and, if the statement finished,
answers with direct results: status, metadata, the first page and, when that page holds
every row, ``closeOperation`` (the operation is then closed server side).
"""
from __future__ import annotations

import threading
import time
import uuid

import duckdb
import pyarrow as pa
from databricks.sql.thrift_api.TCLIService import TCLIService, ttypes

try:
    from .warehouse_results import (
        arrow_row_set,
        bind_parameters,
        column_row_set,
        databricks_error,
        thrift_schema,
        to_databricks_table,
    )
except ImportError:  # run as a script
    from warehouse_results import (
        arrow_row_set,
        bind_parameters,
        column_row_set,
        databricks_error,
        thrift_schema,
        to_databricks_table,
    )

S = ttypes.TOperationState
OK = ttypes.TStatus(statusCode=ttypes.TStatusCode.SUCCESS_STATUS)
TERMINAL = (S.FINISHED_STATE, S.ERROR_STATE, S.CANCELED_STATE, S.CLOSED_STATE)
STATE_NAMES = ttypes.TOperationState._VALUES_TO_NAMES
MAX_PROTOCOL = ttypes.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V9


def _error(message: str, sqlstate: str | None = None, code=ttypes.TStatusCode.ERROR_STATUS):
    return ttypes.TStatus(statusCode=code, errorMessage=message, displayMessage=message,
                          sqlState=sqlstate)


class Session:
    def __init__(self, configuration: dict, catalog: str | None, schema: str | None,
                 protocol: int) -> None:
        self.guid, self.secret = uuid.uuid4().bytes, uuid.uuid4().bytes
        self.hex = str(uuid.UUID(bytes=self.guid))
        self.configuration, self.catalog, self.schema = configuration, catalog, schema
        self.protocol = protocol
        self.operations: dict[bytes, Operation] = {}

    def handle(self) -> ttypes.TSessionHandle:
        return ttypes.TSessionHandle(sessionId=ttypes.THandleIdentifier(self.guid, self.secret),
                                     serverProtocolVersion=self.protocol)


class Operation:
    def __init__(self, session: Session, req: ttypes.TExecuteStatementReq, record: dict) -> None:
        self.guid, self.secret = uuid.uuid4().bytes, uuid.uuid4().bytes
        self.hex = str(uuid.UUID(bytes=self.guid))
        self.session, self.statement, self.record = session, req.statement, record
        arrow_types = req.useArrowNativeTypes or ttypes.TSparkArrowTypes()
        self.arrow = bool(req.canReadArrowResult)
        self.lz4 = bool(req.canDecompressLZ4Result)
        self.native = dict(decimal_as_arrow=arrow_types.decimalAsArrow is not False,
                           timestamp_as_arrow=arrow_types.timestampAsArrow is not False,
                           complex_as_arrow=arrow_types.complexTypesAsArrow is not False)
        self.row_limit = req.resultRowLimit
        self.state = S.PENDING_STATE
        self.changed = threading.Condition()
        self.cancelled = threading.Event()
        self.cursor = None
        self.thread: threading.Thread | None = None
        self.table: pa.Table | None = None
        self.offset = 0
        self.sqlstate = self.message = self.diagnostic = None

    def handle(self) -> ttypes.TOperationHandle:
        return ttypes.TOperationHandle(
            operationId=ttypes.THandleIdentifier(self.guid, self.secret),
            operationType=ttypes.TOperationType.EXECUTE_STATEMENT, hasResultSet=True)

    def set_state(self, state: int, only_from: tuple = ()) -> bool:
        with self.changed:
            if only_from and self.state not in only_from:
                return False
            if self.state in TERMINAL and state != S.CLOSED_STATE:
                return False
            self.state = state
            self.record["state"] = STATE_NAMES[state]
            self.changed.notify_all()
            return True

    def wait(self, seconds: float | None, seen: int | None = None) -> int:
        """Wait (``seconds``, None: no limit) until the state is terminal or, given
        ``seen``, differs from ``seen``."""
        deadline = None if seconds is None else time.monotonic() + seconds
        with self.changed:
            while True:
                moved = self.state in TERMINAL or (seen is not None and self.state != seen)
                left = None if deadline is None else deadline - time.monotonic()
                if moved or (left is not None and left <= 0):
                    return self.state
                self.changed.wait(left)

    def cancel(self) -> None:
        self.cancelled.set()
        if self.set_state(S.CANCELED_STATE) and self.thread is not None:
            threading.Thread(target=self._interrupt, daemon=True).start()

    def _interrupt(self) -> None:
        # DuckDB only interrupts a query that is running: repeat until the thread is done
        # (a cancel can land between the cursor's creation and the query's start).
        deadline = time.monotonic() + 10
        while self.thread.is_alive() and time.monotonic() < deadline:
            cursor = self.cursor
            if cursor is not None:
                try:
                    cursor.interrupt()
                except Exception:
                    pass
            self.thread.join(0.05)


class WarehouseService(TCLIService.Iface):
    def __init__(self, db: duckdb.DuckDBPyConnection, stats, faults, *, status_wait: float = 1.0,
                 page_rows: int = 100_000, lz4: bool = True) -> None:
        self.db, self.stats, self.faults = db, stats, faults
        self.status_wait, self.page_rows, self.lz4 = status_wait, page_rows, lz4
        self.lock = threading.Lock()
        self.sessions: dict[bytes, Session] = {}
        self.operations: dict[bytes, Operation] = {}
        stats.live = self.live

    # ---- bookkeeping ----------------------------------------------------------------
    def live(self) -> tuple[list, list]:
        with self.lock:
            sessions = [s.hex for s in self.sessions.values()]
            running = [{"id": o.hex, "session": o.session.hex, "statement": o.statement,
                        "state": STATE_NAMES[o.state]}
                       for o in self.operations.values()
                       if o.state in (S.PENDING_STATE, S.RUNNING_STATE)]
        return sessions, running

    def forget(self, session_hex: str | None = None) -> list[str]:
        with self.lock:
            gone = [s for s in self.sessions.values() if session_hex in (None, s.hex)]
            for session in gone:
                del self.sessions[session.guid]
                for op in session.operations.values():
                    self.operations.pop(op.guid, None)
                    op.cancel()
        return [s.hex for s in gone]

    def close_all(self) -> None:
        with self.lock:
            ops = list(self.operations.values())
            self.sessions.clear()
            self.operations.clear()
        for op in ops:
            op.cancel()

    def _session(self, handle) -> Session | None:
        guid = handle and handle.sessionId and handle.sessionId.guid
        with self.lock:
            return self.sessions.get(guid)

    def _op(self, handle) -> Operation | None:
        guid = handle and handle.operationId and handle.operationId.guid
        with self.lock:
            return self.operations.get(guid)

    @staticmethod
    def _bad_session(handle) -> ttypes.TStatus:
        guid = handle and handle.sessionId and handle.sessionId.guid
        name = str(uuid.UUID(bytes=guid)) if guid and len(guid) == 16 else "?"
        return _error(f"Invalid SessionHandle: SessionHandle [{name}]")

    @staticmethod
    def _bad_op(handle) -> ttypes.TStatus:
        guid = handle and handle.operationId and handle.operationId.guid
        name = str(uuid.UUID(bytes=guid)) if guid and len(guid) == 16 else "?"
        return _error("Invalid OperationHandle: OperationHandle "
                      f"[opType=EXECUTE_STATEMENT, getHandleIdentifier()={name}]")

    # ---- sessions -------------------------------------------------------------------
    def OpenSession(self, req):
        self.stats.count("OpenSession")
        ns = req.initialNamespace
        catalog, schema = (ns.catalogName, ns.schemaName) if ns else (None, None)
        asked = req.client_protocol_i64 or req.client_protocol or MAX_PROTOCOL
        protocol = min(asked, MAX_PROTOCOL)
        self.stats.record("session_configs", {"configuration": dict(req.configuration or {}),
                                              "catalog": catalog, "schema": schema,
                                              "client_protocol": asked})
        if schema and not self._schema_exists(schema):
            msg = f"[SCHEMA_NOT_FOUND] The schema `{schema}` cannot be found. SQLSTATE: 42704"
            return ttypes.TOpenSessionResp(status=_error(msg, "42704"),
                                           serverProtocolVersion=protocol)
        session = Session(dict(req.configuration or {}), catalog, schema, protocol)
        with self.lock:
            self.sessions[session.guid] = session
        return ttypes.TOpenSessionResp(status=OK, serverProtocolVersion=protocol,
                                       sessionHandle=session.handle(), configuration={},
                                       initialNamespace=ns, canUseMultipleCatalogs=True)

    def _schema_exists(self, schema: str) -> bool:
        cur = self.db.cursor()
        try:
            return bool(cur.execute("SELECT 1 FROM duckdb_schemas() "
                                    "WHERE lower(schema_name) = lower(?)",
                                    [schema]).fetchall())
        finally:
            cur.close()

    def CloseSession(self, req):
        self.stats.count("CloseSession")
        session = self._session(req.sessionHandle)
        if session is None:
            return ttypes.TCloseSessionResp(status=self._bad_session(req.sessionHandle))
        self.forget(session.hex)
        return ttypes.TCloseSessionResp(status=OK)

    # ---- statements -----------------------------------------------------------------
    def ExecuteStatement(self, req):
        self.stats.count("ExecuteStatement")
        session = self._session(req.sessionHandle)
        params = [{"name": p.name, "type": p.type, "value": getattr(p.value, "stringValue", None)}
                  for p in req.parameters or []]
        record = {"id": None, "session": session.hex if session else None,
                  "statement": req.statement,
                  "parameters": params, "conf_overlay": dict(req.confOverlay or {}),
                  "run_async": bool(req.runAsync), "arrow": bool(req.canReadArrowResult),
                  "direct_results": req.getDirectResults is not None,
                  "cloud_fetch": bool(req.canDownloadResult), "state": None, "error": None}
        self.stats.record("statements", req.statement)
        self.stats.record("conf_overlays", dict(req.confOverlay or {}))
        self.stats.record("executions", record)
        if session is None:
            record["state"] = "INVALID_SESSION"
            return ttypes.TExecuteStatementResp(status=self._bad_session(req.sessionHandle))
        op = Operation(session, req, record)
        record["id"] = op.hex
        with self.lock:
            self.operations[op.guid] = op
            session.operations[op.guid] = op
        op.record["state"] = STATE_NAMES[S.PENDING_STATE]
        op.thread = threading.Thread(target=self._run, args=(op, req.parameters), daemon=True,
                                     name=f"standin-op-{op.hex[:8]}")
        op.thread.start()
        if not req.runAsync:
            op.wait(None)
        elif req.getDirectResults is not None:
            op.wait(self.status_wait)
        resp = ttypes.TExecuteStatementResp(status=OK, operationHandle=op.handle())
        if req.getDirectResults is not None:
            resp.directResults = self._direct_results(op, req.getDirectResults)
        return resp

    def _run(self, op: Operation, parameters) -> None:
        cursor = None
        try:
            op.set_state(S.RUNNING_STATE, only_from=(S.PENDING_STATE,))
            delay = self.faults.slow_seconds(op.statement)
            if delay and op.cancelled.wait(delay):
                return
            sql, values = bind_parameters(op.statement, parameters)
            cursor = self.db.cursor()
            with op.changed:
                if op.cancelled.is_set():
                    return
                op.cursor = cursor
            if op.session.schema:
                cursor.execute(f'USE "{op.session.schema}"')
            relation = cursor.sql(sql, params=values) if values is not None else cursor.sql(sql)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
            if op.row_limit:
                table = table.slice(0, op.row_limit)
            op.table = to_databricks_table(table, **op.native)
            op.set_state(S.FINISHED_STATE, only_from=(S.RUNNING_STATE,))
        except Exception as exc:  # DuckDB errors, interrupts
            if op.cancelled.is_set():
                return
            op.sqlstate, op.message = databricks_error(exc)
            op.diagnostic = f"{type(exc).__name__}: {exc}"
            op.record["error"] = op.message
            op.set_state(S.ERROR_STATE)
        finally:
            op.cursor = None
            if cursor is not None:
                cursor.close()

    def _status_resp(self, op: Operation) -> ttypes.TGetOperationStatusResp:
        resp = ttypes.TGetOperationStatusResp(status=OK, operationState=op.state, hasResultSet=True)
        if op.state == S.ERROR_STATE:
            resp.sqlState, resp.errorMessage = op.sqlstate, op.message
            resp.displayMessage, resp.diagnosticInfo = op.message, op.diagnostic
            resp.errorCode = 0
        return resp

    def _direct_results(self, op: Operation, want) -> ttypes.TSparkDirectResults:
        direct = ttypes.TSparkDirectResults(operationStatus=self._status_resp(op))
        if op.state != S.FINISHED_STATE:
            return direct
        direct.resultSetMetadata = self._metadata(op)
        direct.resultSet = self._fetch(op, want.maxRows)
        if not direct.resultSet.hasMoreRows:
            self._close(op)
            direct.closeOperation = ttypes.TCloseOperationResp(status=OK)
        return direct

    def GetOperationStatus(self, req):
        self.stats.count("GetOperationStatus")
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TGetOperationStatusResp(status=self._bad_op(req.operationHandle))
        op.wait(self.status_wait, seen=op.state)
        return self._status_resp(op)

    def _not_ready(self, op: Operation) -> ttypes.TStatus | None:
        if op.state == S.FINISHED_STATE:
            return None
        name = STATE_NAMES[op.state].replace("_STATE", "")
        note = " (the statement was canceled)" if op.state == S.CANCELED_STATE else ""
        return _error(f"Invalid OperationState: expected state FINISHED, but found {name}{note}",
                      "HY008" if op.state == S.CANCELED_STATE else "HY010")

    def _metadata(self, op: Operation) -> ttypes.TGetResultSetMetadataResp:
        schema = op.table.schema
        return ttypes.TGetResultSetMetadataResp(
            status=OK, schema=thrift_schema(schema),
            resultFormat=(ttypes.TSparkRowSetType.ARROW_BASED_SET if op.arrow
                          else ttypes.TSparkRowSetType.COLUMN_BASED_SET),
            lz4Compressed=bool(op.arrow and op.lz4 and self.lz4),
            arrowSchema=schema.serialize().to_pybytes() if op.arrow else None,
            isStagingOperation=False)

    def GetResultSetMetadata(self, req):
        self.stats.count("GetResultSetMetadata")
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TGetResultSetMetadataResp(status=self._bad_op(req.operationHandle))
        problem = self._not_ready(op)
        if problem:
            return ttypes.TGetResultSetMetadataResp(status=problem)
        return self._metadata(op)

    def _fetch(self, op: Operation, max_rows: int | None) -> ttypes.TFetchResultsResp:
        rows = min(max_rows or self.page_rows, self.page_rows)
        start = op.offset
        page = op.table.slice(start, rows)
        op.offset = start + page.num_rows
        results = (arrow_row_set(page, start, op.lz4 and self.lz4) if op.arrow
                   else column_row_set(page, start))
        return ttypes.TFetchResultsResp(status=OK, hasMoreRows=op.offset < op.table.num_rows,
                                        results=results)

    def FetchResults(self, req):
        self.stats.count("FetchResults")
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TFetchResultsResp(status=self._bad_op(req.operationHandle))
        problem = self._not_ready(op)
        if problem:
            return ttypes.TFetchResultsResp(status=problem)
        if req.orientation == ttypes.TFetchOrientation.FETCH_FIRST:
            op.offset = 0
        resp = self._fetch(op, req.maxRows)
        if req.includeResultSetMetadata:
            resp.resultSetMetadata = self._metadata(op)
        return resp

    def CancelOperation(self, req):
        self.stats.count("CancelOperation")
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TCancelOperationResp(status=self._bad_op(req.operationHandle))
        op.cancel()
        return ttypes.TCancelOperationResp(status=OK)

    def _close(self, op: Operation) -> None:
        op.cancel()
        op.set_state(S.CLOSED_STATE)
        op.table = None
        with self.lock:
            self.operations.pop(op.guid, None)
            op.session.operations.pop(op.guid, None)

    def CloseOperation(self, req):
        self.stats.count("CloseOperation")
        op = self._op(req.operationHandle)
        if op is None:
            return ttypes.TCloseOperationResp(status=self._bad_op(req.operationHandle))
        self._close(op)
        return ttypes.TCloseOperationResp(status=OK)

    # ---- metadata calls the connector may make, not served ----------------------------
    def _unsupported(self, name, resp_cls):
        self.stats.count(name)
        return resp_cls(status=_error(f"[UNSUPPORTED_FEATURE] {name} is not served by the "
                                      "stand-in. SQLSTATE: 0A000", "0A000"))

    def GetInfo(self, req):
        return self._unsupported("GetInfo", ttypes.TGetInfoResp)

    def GetCatalogs(self, req):
        return self._unsupported("GetCatalogs", ttypes.TGetCatalogsResp)

    def GetSchemas(self, req):
        return self._unsupported("GetSchemas", ttypes.TGetSchemasResp)

    def GetTables(self, req):
        return self._unsupported("GetTables", ttypes.TGetTablesResp)

    def GetColumns(self, req):
        return self._unsupported("GetColumns", ttypes.TGetColumnsResp)
