"""``turbo.query``: one SQL statement on a registered engine."""
from __future__ import annotations

import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from celeryapp import app
from celeryapp.config import get_settings
from celeryapp.core.names import QUERY_TASK
from celeryapp.worker import running

from . import sql as sql_runner
from .base import TurboTask, check_retries
from .engines import get_engine
from .errors import TransientError
from .hooks import pool_processes, sweep_results


@app.task(bind=True, base=TurboTask, name=QUERY_TASK)
def run_query(self, sql: str, params=None, engine: str | None = None, *,
              timeout: float | None = None, retries: int | None = None,
              max_inline_rows: int | None = None) -> dict:
    """Run ``sql`` with bound ``params`` and return columns, rows and timing.

    ``timeout`` covers the whole call: every attempt (each gets what is left of it as
    its deadline) and the pauses between them. Transient errors (EngineUnavailable)
    are retried with backoff up to ``retries`` (default TURBO_MAX_RETRIES) while the
    timeout allows. Results past ``max_inline_rows`` go to Parquet under
    TURBO_RESULTS_DIR; the result then carries ``parquet_path`` and a preview instead
    of every row.
    """
    settings = get_settings()
    retries = check_retries(retries)
    timeout = self.checked_timeout(timeout)
    inline = settings.max_inline_rows if max_inline_rows is None else int(max_inline_rows)
    chosen = get_engine(engine or settings.default_engine, settings,
                        processes=pool_processes())
    spill_path = Path(settings.results_dir) / f"{self.request.id}.parquet"
    budget = self.budget(timeout)
    left = self.attempt_timeout(budget, f"{chosen.name} query")
    started = time.monotonic()
    try:
        result = sql_runner.execute(chosen, sql, params, timeout=left,
                                    max_inline_rows=inline, preview_rows=settings.preview_rows,
                                    spill_path=spill_path, on_start=running.on_session,
                                    task_id=self.request.id)
    except SoftTimeLimitExceeded as exc:
        raise self.stopped(f"{chosen.name} query", started) from exc
    except TransientError as exc:
        self.retry_within(exc, retries, budget)
    result.update(task_id=self.request.id, worker=self.request.hostname,
                  attempts=self.request.retries + 1)
    if result.get("parquet_path"):
        _sweep_now_and_then()
    return result


_SWEEP_EVERY_S = 600.0
_last_sweep = 0.0


def _sweep_now_and_then() -> None:
    """Long-running workers also drop expired Parquet results, at most every 10 min."""
    global _last_sweep
    if time.monotonic() - _last_sweep >= _SWEEP_EVERY_S:
        _last_sweep = time.monotonic()
        sweep_results()
