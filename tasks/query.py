"""``turbo.query``: one SQL statement on a registered engine."""
from __future__ import annotations

import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from celeryapp import app, running
from celeryapp.config import get_settings

from . import sql as sql_runner
from .base import TurboTask, check_retries
from .engines import get_engine
from .errors import TransientError


@app.task(bind=True, base=TurboTask, name="turbo.query")
def run_query(self, sql: str, params=None, engine: str | None = None, *,
              timeout: float | None = None, retries: int | None = None,
              max_inline_rows: int | None = None) -> dict:
    """Run ``sql`` with bound ``params`` and return columns, rows and timing.

    Results past ``max_inline_rows`` go to Parquet under TURBO_RESULTS_DIR; the
    result then carries ``parquet_path`` and a preview instead of every row.
    """
    settings = get_settings()
    retries = check_retries(retries)
    timeout = self.checked_timeout(timeout)
    inline = settings.max_inline_rows if max_inline_rows is None else int(max_inline_rows)
    chosen = get_engine(engine or settings.default_engine, settings)
    spill_path = Path(settings.results_dir) / f"{self.request.id}.parquet"
    started = time.monotonic()
    try:
        result = sql_runner.execute(chosen, sql, params, timeout=timeout,
                             max_inline_rows=inline, preview_rows=settings.preview_rows,
                             spill_path=spill_path, on_start=running.on_session)
    except SoftTimeLimitExceeded as exc:
        raise self.stopped(f"{chosen.name} query", started) from exc
    except TransientError as exc:
        self.retry_transient(exc, retries)
    result.update(task_id=self.request.id, worker=self.request.hostname,
                  attempts=self.request.retries + 1)
    return result
