"""DuckDB -> Databricks shapes for the warehouse stand-in: result types, the Thrift
schema, Arrow / column-based row sets, bound parameters and error messages."""
from __future__ import annotations

import datetime as dt
import decimal
import re

import lz4.frame
import pyarrow as pa
from databricks.sql.thrift_api.TCLIService import ttypes

T = ttypes.TTypeId

# ---- result types -------------------------------------------------------------------


def to_databricks_table(table: pa.Table, *, decimal_as_arrow=True, timestamp_as_arrow=True,
                        complex_as_arrow=True) -> pa.Table:
    """Cast DuckDB's Arrow types to the ones a Databricks warehouse sends."""
    fields, columns = [], []
    for fld, col in zip(table.schema, table.columns, strict=True):
        target = _target_type(fld.type, decimal_as_arrow, timestamp_as_arrow, complex_as_arrow)
        if target != fld.type:
            col = col.cast(target) if target != pa.string() else _to_string(col)
        fields.append(pa.field(fld.name, target))
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _target_type(t: pa.DataType, decimal_as_arrow, timestamp_as_arrow, complex_as_arrow):
    if pa.types.is_uint8(t):
        return pa.int16()
    if pa.types.is_uint16(t):
        return pa.int32()
    if pa.types.is_uint32(t):
        return pa.int64()
    if pa.types.is_uint64(t):
        return pa.decimal128(20, 0) if decimal_as_arrow else pa.string()
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_decimal(t):
        return t if (decimal_as_arrow and t.precision <= 38) else pa.string()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz) if timestamp_as_arrow else pa.string()
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_time(t) or pa.types.is_interval(t) or pa.types.is_duration(t):
        return pa.string()
    if pa.types.is_nested(t) and not complex_as_arrow:
        return pa.string()
    if pa.types.is_dictionary(t):
        return _target_type(t.value_type, decimal_as_arrow, timestamp_as_arrow, complex_as_arrow)
    return t


def _to_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()],
                                          pa.string())])


def _type_entry(t: pa.DataType) -> ttypes.TTypeEntry:
    qualifiers = None
    if pa.types.is_boolean(t):
        tid = T.BOOLEAN_TYPE
    elif pa.types.is_int8(t):
        tid = T.TINYINT_TYPE
    elif pa.types.is_int16(t):
        tid = T.SMALLINT_TYPE
    elif pa.types.is_int32(t):
        tid = T.INT_TYPE
    elif pa.types.is_int64(t):
        tid = T.BIGINT_TYPE
    elif pa.types.is_float32(t) or pa.types.is_float16(t):
        tid = T.FLOAT_TYPE
    elif pa.types.is_float64(t):
        tid = T.DOUBLE_TYPE
    elif pa.types.is_decimal(t):
        tid = T.DECIMAL_TYPE
        qualifiers = ttypes.TTypeQualifiers({
            "precision": ttypes.TTypeQualifierValue(i32Value=t.precision),
            "scale": ttypes.TTypeQualifierValue(i32Value=t.scale)})
    elif pa.types.is_date(t):
        tid = T.DATE_TYPE
    elif pa.types.is_timestamp(t):
        tid = T.TIMESTAMP_TYPE
    elif pa.types.is_binary(t):
        tid = T.BINARY_TYPE
    elif pa.types.is_null(t):
        tid = T.NULL_TYPE
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        tid = T.ARRAY_TYPE
    elif pa.types.is_map(t):
        tid = T.MAP_TYPE
    elif pa.types.is_struct(t):
        tid = T.STRUCT_TYPE
    else:
        tid = T.STRING_TYPE
    return ttypes.TTypeEntry(primitiveEntry=ttypes.TPrimitiveTypeEntry(type=tid,
                                                                       typeQualifiers=qualifiers))


def thrift_schema(schema: pa.Schema) -> ttypes.TTableSchema:
    return ttypes.TTableSchema(columns=[
        ttypes.TColumnDesc(columnName=f.name,
                           typeDesc=ttypes.TTypeDesc(types=[_type_entry(f.type)]),
                           position=i + 1)
        for i, f in enumerate(schema)])


# ---- row sets -----------------------------------------------------------------------


def arrow_row_set(page: pa.Table, start: int, lz4_compressed: bool,
                  batch_rows: int = 50_000) -> ttypes.TRowSet:
    batches = []
    for batch in page.to_batches(max_chunksize=batch_rows):
        if not batch.num_rows:
            continue
        data = batch.serialize().to_pybytes()
        batches.append(ttypes.TSparkArrowBatch(
            batch=lz4.frame.compress(data) if lz4_compressed else data, rowCount=batch.num_rows))
    return ttypes.TRowSet(startRowOffset=start, rows=[], arrowBatches=batches)


_COLUMN_KINDS = [  # (predicate, TColumn field, value class)
    (pa.types.is_boolean, "boolVal", ttypes.TBoolColumn),
    (pa.types.is_int8, "byteVal", ttypes.TByteColumn),
    (pa.types.is_int16, "i16Val", ttypes.TI16Column),
    (pa.types.is_int32, "i32Val", ttypes.TI32Column),
    (pa.types.is_int64, "i64Val", ttypes.TI64Column),
    (pa.types.is_floating, "doubleVal", ttypes.TDoubleColumn),
    (pa.types.is_binary, "binaryVal", ttypes.TBinaryColumn),
]


def column_row_set(page: pa.Table, start: int) -> ttypes.TRowSet:
    """Column-based rows for a client that cannot read Arrow (strings for everything else)."""
    columns = []
    for col in page.columns:
        values = col.to_pylist()
        nulls = bytearray((len(values) + 7) // 8)
        for i, v in enumerate(values):
            if v is None:
                nulls[i // 8] |= 1 << (i % 8)
        for predicate, name, cls in _COLUMN_KINDS:  # noqa: B007 - cls is used after the break
            if predicate(col.type):
                fill = b"" if name == "binaryVal" else (False if name == "boolVal" else 0)
                values = [fill if v is None else v for v in values]
                break
        else:
            name, cls = "stringVal", ttypes.TStringColumn
            values = ["" if v is None else _text(v) for v in values]
        columns.append(ttypes.TColumn(**{name: cls(values=values, nulls=bytes(nulls))}))
    return ttypes.TRowSet(startRowOffset=start, rows=[], columns=columns)


def _text(value) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


# ---- bound parameters ---------------------------------------------------------------

_NAMED_MARKER = re.compile(r"""('(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`[^`]*`"""
                           r"""|--[^\n]*|/\*.*?\*/|::)"""
                           r"""|:([A-Za-z_][A-Za-z0-9_]*)""", re.S)


def bind_parameters(statement: str, params: list | None) -> tuple[str, dict | list | None]:
    """TSparkParameters -> (DuckDB SQL, DuckDB parameters). ``:name`` markers become
    ``$name`` (outside quotes and comments; ``::`` casts untouched), also when no value is
    given, so DuckDB reports the unbound parameter as Databricks does; ``?`` stays ``?``."""
    params = params or []
    named = bool(params) and all(p.name is not None for p in params)
    values = ({p.name: parameter_value(p.type, p.value, p.arguments) for p in params}
              if named else {})
    lowered = {name.lower(): name for name in values}

    def swap(match: re.Match) -> str:
        name = match.group(2)
        if name is None:
            return match.group(0)
        return "$" + (name if name in values else lowered.get(name.lower(), name))

    sql = _NAMED_MARKER.sub(swap, statement)
    if named:
        return sql, values
    if params:
        return sql, [parameter_value(p.type, p.value, p.arguments) for p in params]
    return sql, None


def parameter_value(type_: str | None, value, arguments=None):
    text = getattr(value, "stringValue", value)
    kind = (type_ or "STRING").upper()
    if kind == "ARRAY":
        return [parameter_value(a.type, a.value, a.arguments) for a in arguments or []]
    if kind == "MAP":
        items = [parameter_value(a.type, a.value, a.arguments) for a in arguments or []]
        return dict(zip(items[0::2], items[1::2], strict=True))
    if text is None or kind == "VOID":
        return None
    if kind in ("INT", "BIGINT", "SMALLINT", "TINYINT"):
        return int(text)
    if kind in ("DOUBLE", "FLOAT"):
        return float(text)
    if kind.startswith("DECIMAL"):
        return decimal.Decimal(text)
    if kind == "BOOLEAN":
        return text.strip().lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(text)
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        return dt.datetime.fromisoformat(text)
    return text


# ---- errors -------------------------------------------------------------------------

_ERRORS = [  # (DuckDB exception class name, regex on its message, error class, SQLSTATE, text)
    ("ParserException", r'syntax error at or near "([^"]*)"', "PARSE_SYNTAX_ERROR", "42601",
     "Syntax error at or near '{0}'."),
    ("ParserException", r"", "PARSE_SYNTAX_ERROR", "42601", "Syntax error: {msg}."),
    ("CatalogException", r"Table with name (\S+) does not exist", "TABLE_OR_VIEW_NOT_FOUND",
     "42P01",
     "The table or view `{0}` cannot be found. Verify the spelling and correctness of the schema "
     "and catalog."),
    ("CatalogException", r"Function with name (\S+) does not exist", "UNRESOLVED_ROUTINE", "42883",
     "Cannot resolve routine `{0}` on search path [`system`.`builtin`, `system`.`session`]."),
    ("CatalogException", r"Schema with name (\S+) does not exist", "SCHEMA_NOT_FOUND", "42704",
     "The schema `{0}` cannot be found."),
    ("CatalogException", r"already exists", "TABLE_OR_VIEW_ALREADY_EXISTS", "42P07", "{msg}."),
    ("BinderException", r'Referenced column "([^"]*)" not found',
     "UNRESOLVED_COLUMN.WITHOUT_SUGGESTION",
     "42703", "A column, variable, or function parameter with name `{0}` cannot be resolved."),
    ("BinderException", r"", "DATATYPE_MISMATCH", "42K09", "{msg}."),
    ("InvalidInputException", r"Values were not provided for the following (?:prepared statement )?"
     r"parameters: (.*)", "UNBOUND_SQL_PARAMETER", "42P02",
     "Found the unbound parameter: {0}. Please, fix `args` and provide a mapping of the parameter "
     "to either a SQL literal or collection constructor functions."),
    ("ConversionException", r"out of range", "CAST_OVERFLOW", "22003", "{msg}."),
    ("ConversionException", r"", "CAST_INVALID_INPUT", "22018", "{msg}."),
    ("OutOfRangeException", r"", "ARITHMETIC_OVERFLOW", "22003", "{msg}."),
    ("InvalidInputException", r"", "INVALID_PARAMETER_VALUE", "22023", "{msg}."),
    ("ConstraintException", r"", "CONSTRAINT_VIOLATION", "23505", "{msg}."),
    ("NotImplementedException", r"", "UNSUPPORTED_FEATURE", "0A000", "{msg}."),
]


def databricks_error(exc: BaseException) -> tuple[str, str]:
    """A DuckDB exception as Databricks reports it: (SQLSTATE, message), the message being
    ``[ERROR_CLASS] text SQLSTATE: XXXXX``."""
    raw = str(exc)
    first = raw.split("\n", 1)[0]
    msg = re.sub(r"^[A-Za-z ]+ Error: ", "", first).rstrip("!.")
    names = {cls.__name__ for cls in type(exc).__mro__}
    for cls_name, pattern, error_class, sqlstate, text in _ERRORS:
        if cls_name in names:
            match = re.search(pattern, raw)
            if match:
                groups = [g.rstrip("!.") for g in match.groups()]
                return sqlstate, (f"[{error_class}] {text.format(*groups, msg=msg)} "
                                  f"SQLSTATE: {sqlstate}")
    return "XX000", f"[INTERNAL_ERROR] {msg}. SQLSTATE: XX000"
