"""Worker hooks that need the runners: the pool's size recorded before it forks, engines
preloaded, expired Parquet results swept. The app lists this module in ``include``, so every
worker connects them before ``worker_init``."""
from __future__ import annotations

import gc
import logging

from celery import signals

from celeryapp.config import get_settings

from .results import sweep_expired

log = logging.getLogger(__name__)


_processes = 1  # this worker's pool processes sharing the host's CPUs (set below)


def pool_processes() -> int:
    """How many pool processes of this worker share the host's CPUs (DuckDB's threads
    per connection follow it: TURBO_DUCKDB_THREADS' default)."""
    return _processes


@signals.celeryd_after_setup.connect
def _remember_pool_size(sender=None, instance=None, **_):
    """In the worker's main process, before the pool forks (the children inherit it):
    ``-c`` (the top of ``--autoscale``) for prefork; one process for threads/solo."""
    global _processes
    pool = getattr(getattr(instance, "pool_cls", None), "__module__", "")
    sizes = [getattr(instance, "concurrency", None), getattr(instance, "max_concurrency", None)]
    if pool.endswith(".prefork"):
        _processes = max([int(s) for s in sizes if isinstance(s, int) or str(s).isdigit()]
                         + [1])
    else:
        _processes = 1


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
