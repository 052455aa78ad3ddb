"""This project's app with chosen per-task costs switched off: an ablation, not a configuration.

    BENCH_TURBO_OFF=events,started celery -A bench.turbo_variant worker -Q bench

Used by ``python -m bench --only throughput --ablate`` to tell what each costs.
Names (comma-separated in BENCH_TURBO_OFF):

* ``events``        worker_send_task_events (task-received/started/succeeded per task)
* ``started``       task_track_started (a STARTED result stored before each task)
* ``recent``        workerhooks' task_prerun hook (ZADD to the recent list per task)
* ``success_check`` Celery's GET of the stored meta before every result store
                    (kept so a late duplicate cannot overwrite SUCCESS)
* ``acks_late``     acks late + prefetch 1 -> Celery's defaults (ack early, prefetch 4)
"""
from __future__ import annotations

import os

from celery import signals

from bench import turbo_tasks  # noqa: F401  (the bench tasks)
from celeryapp import app, workerhooks

KNOWN = ("events", "started", "recent", "success_check", "acks_late")
OFF = {name for name in os.environ.get("BENCH_TURBO_OFF", "").split(",") if name}
if OFF - set(KNOWN):
    raise ValueError(f"BENCH_TURBO_OFF: unknown {sorted(OFF - set(KNOWN))}; use {KNOWN}")

task_settings: dict = {}
if "events" in OFF:
    app.conf.worker_send_task_events = False
if "started" in OFF:
    app.conf.task_track_started = False
    task_settings["track_started"] = False
if "acks_late" in OFF:
    app.conf.task_acks_late = False
    app.conf.worker_prefetch_multiplier = 4
    task_settings["acks_late"] = False
if "recent" in OFF:
    signals.task_prerun.disconnect(workerhooks._started)
if "success_check" in OFF:
    from celery.backends.base import BaseKeyValueStoreBackend, BackendStoreError
    from kombu.utils.encoding import bytes_to_str

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result

    BaseKeyValueStoreBackend._store_result = _store_result

if task_settings:
    app.loader.import_default_modules()
    for task in app.tasks.values():  # task options were read from the config at bind time
        for name, value in task_settings.items():
            setattr(task, name, value)
