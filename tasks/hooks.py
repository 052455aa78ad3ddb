"""Worker hooks that need the runners: engines preloaded before the pool forks,
expired Parquet results swept. The app lists this module in ``include``, so every
worker connects them before ``worker_init``."""
from __future__ import annotations

import gc
import logging

from celery import signals

from celeryapp.config import get_settings

from .results import sweep_expired

log = logging.getLogger(__name__)


@signals.worker_init.connect
def _share_memory_with_children(**_):
    """In the main process, before the pool forks: load the engines once so every
    child shares their pages, then move what exists to a permanent GC generation so
    the children's collections do not touch (and so copy) those pages."""
    import duckdb  # noqa: F401  (the point is to load them here, in the parent)
    import pyarrow.parquet  # noqa: F401

    from .engines import duckdb as _duckdb_engine  # noqa: F401

    gc.collect()
    gc.freeze()


@signals.worker_ready.connect
def _sweep_spilled_results(**_):
    sweep_results()


def sweep_results() -> None:
    """Parquet results expire with the results that name them (TURBO_RESULT_EXPIRES)."""
    settings = get_settings()
    removed = sweep_expired(settings.results_dir, settings.result_expires)
    if removed:
        log.info("removed %d expired result file(s) from %s", removed, settings.results_dir)
