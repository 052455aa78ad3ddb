"""The demo's sample DuckDB database and the analysis queries run against it.

The data is generated inside DuckDB from ``range()`` with ``hash()``-based
pseudo-random values: deterministic (same rows on every machine running the
same DuckDB version), no downloads, and about 10 M orders in a few seconds.
Skews (a few heavy customers, popular products, growth over time) make the
query results look like a shop, not like noise.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

SCHEMA_VERSION = 1
"""Bump when the tables change: an older database is then rebuilt."""
DEFAULT_ROWS = 10_000_000
PRODUCTS = 2_000
START = "2024-01-01"
DAYS = 731  # two years of orders

COUNTRIES = ["US", "DE", "GB", "FR", "NL", "SE", "ES", "IT", "PL", "JP", "BR", "CA"]
SEGMENTS = ["consumer", "consumer", "consumer", "smb", "smb", "enterprise"]
CATEGORIES = ["books", "electronics", "garden", "toys", "grocery", "sports", "beauty", "home"]
CHANNELS = ["web", "web", "app", "app", "store", "partner"]


def customers_for(rows: int) -> int:
    """One customer per 50 orders, at least enough for a result that spills to Parquet."""
    return max(5_000, rows // 50)


def _unit(*salt: Any) -> str:
    """SQL for a deterministic pseudo-random value in [0, 1) from ``hash(i, salt)``."""
    args = ", ".join(["i", *(repr(s) for s in salt)])
    return f"((hash({args}) % 1000003) / 1000003.0)"


def _pick(values: list[str], *salt: Any) -> str:
    """SQL picking one of ``values`` uniformly (repeat a value to weight it)."""
    items = ", ".join(f"'{v}'" for v in values)
    return f"([{items}])[1 + (hash(i, {', '.join(repr(s) for s in salt)}) % {len(values)})::INT]"


def build_statements(rows: int) -> list[str]:
    customers = customers_for(rows)
    return [
        f"""
        CREATE TABLE products AS
        SELECT i AS product_id,
               'product-' || lpad(i::VARCHAR, 4, '0') AS name,
               {_pick(CATEGORIES, 'category')} AS category,
               round(2 + 400 * pow({_unit('price')}, 3), 2)::DECIMAL(10, 2) AS list_price
        FROM range({PRODUCTS}) t(i)
        """,
        f"""
        CREATE TABLE customers AS
        SELECT i AS customer_id,
               'customer-' || lpad(i::VARCHAR, 7, '0') AS name,
               {_pick(COUNTRIES, 'country')} AS country,
               {_pick(SEGMENTS, 'segment')} AS segment,
               DATE '{START}' - 365 + floor({_unit('signup')} * 700)::INT AS signup_date
        FROM range({customers}) t(i)
        """,
        # Heavy customers and popular products have low ids (pow skews towards 0);
        # sqrt() puts more orders late in the period (a growing shop).
        f"""
        CREATE TABLE orders AS
        WITH gen AS (
            SELECT i AS order_id,
                   floor({customers} * pow({_unit('customer')}, 1.3))::BIGINT AS customer_id,
                   floor({PRODUCTS} * pow({_unit('product')}, 1.8))::BIGINT AS product_id,
                   TIMESTAMP '{START}'
                     + to_seconds(floor(sqrt({_unit('ts')}) * {DAYS} * 86400)::BIGINT) AS order_ts,
                   1 + floor(pow({_unit('qty')}, 4) * 12)::INT AS quantity,
                   {_unit('discount')} AS u_discount,
                   {_unit('status')} AS u_status,
                   {_pick(CHANNELS, 'channel')} AS channel
            FROM range({rows}) t(i)
        )
        SELECT order_id, customer_id, gen.product_id, order_ts, quantity,
               p.list_price AS unit_price,
               CASE WHEN u_discount < 0.70 THEN 0.00 WHEN u_discount < 0.92 THEN 0.10
                    ELSE 0.25 END::DECIMAL(3, 2) AS discount,
               CASE WHEN u_status < 0.90 THEN 'completed' WHEN u_status < 0.96 THEN 'returned'
                    ELSE 'cancelled' END AS status,
               channel
        FROM gen JOIN products p USING (product_id)
        ORDER BY order_ts
        """,
        f"""
        CREATE TABLE demo_meta AS
        SELECT {SCHEMA_VERSION} AS schema_version, {rows}::BIGINT AS orders,
               now()::TIMESTAMP AS built_at
        """,
    ]


def database_info(path: Path) -> dict | None:
    """``{"schema_version", "orders"}`` of an existing demo database, else None."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            version, orders = con.execute(
                "SELECT schema_version, orders FROM demo_meta").fetchone()
    except duckdb.Error:
        return None  # unreadable or a schema without demo_meta: rebuild
    return {"schema_version": version, "orders": orders}


def ensure_database(path: Path, rows: int) -> tuple[bool, float]:
    """Build the database unless an up-to-date one with ``rows`` orders exists.

    Returns ``(built, seconds)``. The file is built under a temporary name and
    renamed, so an interrupted build never leaves a half database behind.
    """
    info = database_info(path)
    if info == {"schema_version": SCHEMA_VERSION, "orders": rows}:
        return False, 0.0
    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".building")
    for leftover in (partial, Path(str(partial) + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(partial)) as con, interruptible():
            con.execute("SET enable_progress_bar = false")
            for statement in build_statements(rows):
                con.execute(statement)
            con.execute("CHECKPOINT")
        os.replace(partial, path)
        Path(str(path) + ".wal").unlink(missing_ok=True)
    except BaseException:
        for leftover in (partial, Path(str(partial) + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    return True, time.monotonic() - started


# --- the workload ---------------------------------------------------------------------
REVENUE = "o.quantity * o.unit_price * (1 - o.discount)"
SUM_REVENUE = f"round(sum({REVENUE}), 2)"


@dataclass(frozen=True)
class DemoQuery:
    name: str
    what: str
    sql: str
    params: list[Any] | None = None


QUERIES: list[DemoQuery] = [
    DemoQuery("revenue_by_day", "completed revenue and orders per day", f"""
        SELECT o.order_ts::DATE AS day, count(*) AS orders, {SUM_REVENUE} AS revenue
        FROM orders o WHERE o.status = 'completed'
        GROUP BY ALL ORDER BY day"""),
    DemoQuery("top_customers", "top 20 customers by revenue (join)", f"""
        SELECT c.customer_id, c.name, c.country, c.segment,
               count(*) AS orders, {SUM_REVENUE} AS revenue
        FROM orders o JOIN customers c USING (customer_id)
        WHERE o.status = 'completed'
        GROUP BY ALL ORDER BY revenue DESC LIMIT 20"""),
    DemoQuery("category_by_month", "revenue per category and month (join)", f"""
        SELECT date_trunc('month', o.order_ts)::DATE AS month, p.category,
               {SUM_REVENUE} AS revenue, sum(o.quantity) AS units
        FROM orders o JOIN products p USING (product_id)
        WHERE o.status = 'completed'
        GROUP BY ALL ORDER BY month, revenue DESC"""),
    DemoQuery("top_products_ranked", "top 3 products per category (window rank)", f"""
        SELECT * FROM (
            SELECT p.category, p.name, {SUM_REVENUE} AS revenue,
                   rank() OVER (PARTITION BY p.category ORDER BY {SUM_REVENUE} DESC) AS rnk
            FROM orders o JOIN products p USING (product_id)
            WHERE o.status = 'completed' GROUP BY p.category, p.name)
        WHERE rnk <= 3 ORDER BY category, rnk"""),
    DemoQuery("moving_average", "7-day moving average and running total (window)", f"""
        WITH daily AS (
            SELECT o.order_ts::DATE AS day, {SUM_REVENUE} AS revenue
            FROM orders o WHERE o.status = 'completed' GROUP BY ALL)
        SELECT day, revenue,
               round(avg(revenue) OVER last_week, 2) AS ma7,
               sum(revenue) OVER (ORDER BY day) AS running_total
        FROM daily
        WINDOW last_week AS (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
        ORDER BY day"""),
    DemoQuery("order_value_percentiles", "p50/p90/p99 order value per channel", f"""
        SELECT o.channel, count(*) AS orders,
               round(quantile_cont({REVENUE}, 0.5), 2) AS p50,
               round(quantile_cont({REVENUE}, 0.9), 2) AS p90,
               round(quantile_cont({REVENUE}, 0.99), 2) AS p99
        FROM orders o WHERE o.status = 'completed' GROUP BY ALL ORDER BY p50 DESC"""),
    DemoQuery("return_rates", "return rate per country and segment (join)", """
        SELECT c.country, c.segment, count(*) AS orders,
               round(avg((o.status = 'returned')::INT), 4) AS return_rate
        FROM orders o JOIN customers c USING (customer_id)
        GROUP BY ALL ORDER BY return_rate DESC"""),
    DemoQuery("cohort_retention", "customers active per signup cohort and month", """
        SELECT date_trunc('quarter', c.signup_date)::DATE AS cohort,
               date_trunc('month', o.order_ts)::DATE AS month,
               count(DISTINCT o.customer_id) AS active_customers
        FROM orders o JOIN customers c USING (customer_id)
        GROUP BY ALL ORDER BY cohort, month"""),
    DemoQuery("customer_lifetime", "every customer's lifetime value (spills to Parquet)", f"""
        SELECT o.customer_id, count(*) AS orders, {SUM_REVENUE} AS revenue,
               min(o.order_ts) AS first_order, max(o.order_ts) AS last_order
        FROM orders o WHERE o.status = 'completed'
        GROUP BY ALL ORDER BY revenue DESC"""),
    DemoQuery("country_since", "one country's orders since a date (bound parameters)", f"""
        SELECT c.segment, o.channel, count(*) AS orders, {SUM_REVENUE} AS revenue
        FROM orders o JOIN customers c USING (customer_id)
        WHERE c.country = ? AND o.order_ts >= ?::TIMESTAMP
        GROUP BY ALL ORDER BY revenue DESC""", ["DE", "2025-06-01"]),
]


def run_sequentially(path: Path, queries: list[DemoQuery]) -> dict[str, tuple[float, int]]:
    """The "before": one in-process connection, one query after another.

    This is how long a caller would block without the workers. Returns
    ``{name: (seconds, rows)}``.
    """
    timings: dict[str, tuple[float, int]] = {}
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        for query in queries:
            started = time.monotonic()
            with interruptible():
                table = _fetch_arrow(con.sql(query.sql, params=query.params))
            timings[query.name] = (time.monotonic() - started, table.num_rows)
    return timings


@contextlib.contextmanager
def interruptible():
    """DuckDB turns Ctrl-C during a statement into an error: give back the KeyboardInterrupt."""
    try:
        yield
    except (duckdb.InterruptException, RuntimeError) as exc:
        if "interrupted" not in str(exc).lower():
            raise
        raise KeyboardInterrupt from None


def _fetch_arrow(relation):
    """The whole result as an Arrow table (the method's name differs across DuckDB versions)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


# --- agent prompts about the results ------------------------------------------------
AGENT_PREAMBLE = ("These are query results from a demo online shop (synthetic data). "
                  "Answer from the data below only, without using any tools, "
                  "in at most two sentences.")


def _csv(result: dict, rows: list[list[Any]]) -> str:
    lines = [",".join(result["columns"])]
    lines += [",".join(str(value) for value in row) for row in rows]
    return "\n".join(lines)


def agent_prompts(results: dict[str, dict]) -> dict[str, str]:
    """``{run name: prompt}`` for the query results at hand (a failed query has none)."""
    asks = {
        "revenue_trend": ("moving_average", lambda rows: rows[-21:],
                          "How did daily revenue develop over these three weeks?"),
        "top_customers": ("top_customers", lambda rows: rows[:10],
                          "What stands out about the top customers?"),
        "channels": ("order_value_percentiles", lambda rows: rows,
                     "Do the sales channels differ in order value?"),
    }
    prompts = {}
    for run, (query, pick, question) in asks.items():
        result = results.get(query)
        if result and result.get("rows"):
            prompts[run] = f"{AGENT_PREAMBLE}\n\n{question}\n\n{_csv(result, pick(result['rows']))}"
    return prompts
