"""turbo.query against real DuckDB, through Redis and a real worker."""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.errors import InvalidRequest, QueryError
from tasks.query import run_query

WAIT = 60


def test_inline_result_with_json_safe_values(shared_worker):
    result = run_query.delay(
        "SELECT 1 AS n, DATE '2026-11-01' AS d, 12.50::DECIMAL(10,2) AS amount, "
        "'\\x01\\x02'::BLOB AS raw, TIMESTAMP '2026-11-01 10:00:00' AS ts, [1, 2] AS xs"
    ).get(timeout=WAIT)
    assert result["columns"] == ["n", "d", "amount", "raw", "ts", "xs"]
    assert result["rows"] == [[1, "2026-11-01", "12.50", "AQI=", "2026-11-01T10:00:00", [1, 2]]]
    assert result["row_count"] == 1
    assert result["truncated"] is False
    assert result["engine"] == "duckdb"
    assert result["elapsed_s"] >= 0
    assert result["worker"] == shared_worker.name
    assert result["attempts"] == 1


def test_query_reads_the_configured_database(shared_worker):
    result = run_query.delay(
        "SELECT count(*) AS n, sum(amount) AS total FROM orders").get(timeout=WAIT)
    assert result["rows"][0][0] == 5000


@pytest.mark.parametrize("params,sql,expected", [
    ([3, "c3"], "SELECT count(*) FROM orders WHERE id % 50 = ? AND customer = ?", [[100]]),
    ({"day": "2026-11-02"}, "SELECT count(*) FROM orders WHERE day = $day::DATE", [[167]]),
])
def test_parameters_are_bound(shared_worker, params, sql, expected):
    result = run_query.delay(sql, params=params).get(timeout=WAIT)
    assert result["rows"] == expected


def test_parameter_is_data_not_sql(shared_worker):
    hostile = "x'; DROP TABLE orders; --"
    result = run_query.delay("SELECT ? AS v", params=[hostile]).get(timeout=WAIT)
    assert result["rows"] == [[hostile]]
    assert run_query.delay("SELECT count(*) FROM orders").get(timeout=WAIT)["rows"] == [[5000]]


def test_large_result_spills_to_parquet(shared_worker, test_env):
    result = run_query.delay(
        "SELECT i, i * 2 AS twice, 'row ' || i AS label FROM range(250000) t(i)",
        max_inline_rows=1000).get(timeout=WAIT)
    assert result["truncated"] is True
    assert result["row_count"] == 250000
    assert len(result["rows"]) == 20  # the preview
    assert result["rows"][0] == [0, 0, "row 0"]
    path = Path(result["parquet_path"])
    assert path.parent == Path(test_env["TURBO_RESULTS_DIR"])
    table = pq.read_table(path)
    assert table.num_rows == 250000
    assert table.column("twice").to_pylist()[-1] == 2 * 249999


def test_large_result_does_not_travel_through_redis(shared_worker, celery_app):
    async_result = run_query.delay("SELECT i, repeat('x', 100) AS pad FROM range(100000) t(i)")
    async_result.get(timeout=WAIT)
    client = celery_app.backend.client
    stored = client.get(celery_app.backend.get_key_for_task(async_result.id))
    assert stored is not None
    assert len(stored) < 20_000, f"result in Redis is {len(stored)} bytes"


@pytest.mark.parametrize("sql,params,needle", [
    ("SELEC 1", None, "syntax error"),
    ("SELECT * FROM missing_table", None, "missing_table"),
    ("SELECT $x", {}, "x"),
])
def test_permanent_errors_fail_at_once_without_retry(shared_worker, celery_app, sql, params,
                                                     needle):
    async_result = run_query.delay(sql, params=params)
    with pytest.raises(QueryError) as raised:
        async_result.get(timeout=WAIT)
    assert needle in str(raised.value)
    meta = celery_app.backend.get_task_meta(async_result.id)
    assert meta["status"] == "FAILURE"
    assert meta["retries"] == 0  # one attempt, no retry
    assert f"{async_result.id}] retry" not in shared_worker.log().lower()


def test_unknown_engine_is_a_clear_error(shared_worker):
    with pytest.raises(InvalidRequest, match="unknown engine 'oracle'; known engines"):
        run_query.delay("SELECT 1", engine="oracle").get(timeout=WAIT)


def test_databricks_without_credentials_names_the_missing_settings(shared_worker):
    with pytest.raises(Exception, match="DATABRICKS_SERVER_HOSTNAME") as raised:
        run_query.delay("SELECT 1", engine="databricks").get(timeout=WAIT)
    assert type(raised.value).__name__ == "EngineNotConfigured"


def test_bad_timeout_is_refused_before_submitting():
    with pytest.raises(InvalidRequest, match="exceeds the maximum"):
        run_query.delay("SELECT 1", timeout=10 ** 6)
    with pytest.raises(InvalidRequest, match="positive number"):
        run_query.delay("SELECT 1", timeout="soon")
    with pytest.raises(InvalidRequest, match="unknown priority"):
        run_query.delay("SELECT 1", priority="urgent")


def test_results_outlive_the_submitting_process(shared_worker):
    """One process submits and exits at once; another, started later, fetches."""
    import json
    import subprocess
    import sys

    submit = ("from tasks.query import run_query\n"
              "print(run_query.delay('SELECT 40 + 2 AS answer, count(*) AS n FROM orders').id)\n")
    fetch = ("import sys, json\n"
             "from celery.result import AsyncResult\n"
             "from celeryapp import app\n"
             "print(json.dumps(AsyncResult(sys.argv[1], app=app).get(timeout=60)))\n")
    task_id = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
    out = subprocess.run([sys.executable, "-c", fetch, task_id], capture_output=True,
                         text=True, timeout=90, check=True).stdout
    result = json.loads(out)
    assert result["rows"] == [[42, 5000]]
    assert result["task_id"] == task_id


def test_expired_parquet_results_are_swept_when_a_worker_starts(start_worker, test_env, tmp_path):
    import os

    from tasks.results import sweep_expired

    results = Path(test_env["TURBO_RESULTS_DIR"])
    results.mkdir(parents=True, exist_ok=True)
    old, fresh = results / "expired-0000.parquet", results / "fresh-0000.parquet"
    for path in (old, fresh):
        path.write_bytes(b"PAR1")
    week_and_a_day = 8 * 24 * 3600  # TURBO_RESULT_EXPIRES defaults to a week
    os.utime(old, (os.path.getmtime(old) - week_and_a_day,) * 2)
    start_worker(queues="q-sweep", concurrency=1)
    deadline = time.monotonic() + 30
    while old.exists():
        assert time.monotonic() < deadline, "expired result file still there"
        time.sleep(0.1)
    assert fresh.exists()
    fresh.unlink()
    partial, kept = tmp_path / "x.parquet.part", tmp_path / "y.parquet"
    partial.write_bytes(b"")
    kept.write_bytes(b"")
    os.utime(partial, (os.path.getmtime(partial) - 7200,) * 2)
    assert sweep_expired(tmp_path, 3600) == 1
    assert not partial.exists() and kept.exists()
