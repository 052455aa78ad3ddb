"""Turn a stream of Arrow batches into a task result.

Small results travel inline (JSON-safe rows); past ``max_inline_rows`` the
whole result is written to Parquet and only its path, the row count and a
preview go through Redis.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def json_safe(value: Any) -> Any:
    """A value JSON can carry without loss of meaning."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN/inf are not JSON
    if isinstance(value, decimal.Decimal):
        return str(value)  # keep every digit
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    return str(value)


def rows_of(table: pa.Table | pa.RecordBatch) -> list[list[Any]]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [[json_safe(v) for v in row] for row in zip(*columns, strict=True)]


def collect(schema: pa.Schema | None, batches: Iterable[pa.RecordBatch], *,
            max_inline_rows: int, preview_rows: int, spill_path: Path) -> dict[str, Any]:
    """Consume ``batches``: rows inline if they fit, else a Parquet file at ``spill_path``."""
    if schema is None:
        return {"columns": [], "rows": [], "row_count": 0, "truncated": False}
    columns = list(schema.names)
    held: list[pa.RecordBatch] = []
    held_rows = 0
    stream: Iterator[pa.RecordBatch] = iter(batches)
    for batch in stream:
        held.append(batch)
        held_rows += batch.num_rows
        if held_rows > max_inline_rows:
            return _spill(schema, held, stream, columns, preview_rows, spill_path)
    table = pa.Table.from_batches(held, schema=schema)
    return {"columns": columns, "rows": rows_of(table), "row_count": table.num_rows,
            "truncated": False}


def _spill(schema, held, stream, columns, preview_rows, spill_path: Path) -> dict[str, Any]:
    spill_path.parent.mkdir(parents=True, exist_ok=True)
    partial = spill_path.with_name(spill_path.name + ".part")
    row_count = 0
    preview = pa.Table.from_batches(held, schema=schema).slice(0, preview_rows)
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for batch in _chain(held, stream):
                writer.write_batch(batch)
                row_count += batch.num_rows
        os.replace(partial, spill_path)  # readers never see a half-written file
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"columns": columns, "rows": rows_of(preview), "row_count": row_count,
            "truncated": True, "parquet_path": str(spill_path),
            "parquet_bytes": spill_path.stat().st_size}


def _chain(held, stream):
    yield from held
    held.clear()  # let the inline buffer go while the rest streams
    yield from stream


def sweep_expired(directory: Path, max_age_s: float, now: float | None = None) -> int:
    """Delete spilled results (and abandoned partial files) older than ``max_age_s``:
    they expire with the task results that point at them. Returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    folder = Path(directory)
    for path in [*folder.glob("*.parquet"), *folder.glob("*.parquet.part")]:
        try:
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            pass
    return removed


def read_parquet(path: str | os.PathLike) -> pa.Table:
    """Load a spilled result (client side)."""
    return pq.read_table(path)
