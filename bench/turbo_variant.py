"""This project's app with chosen per-task costs switched off: an ablation, not a configuration.

    BENCH_TURBO_OFF=events,started celery -A bench.turbo_variant worker -Q bench

Used by ``python -m bench --only throughput --ablate`` to tell what each costs.
Names (comma-separated in BENCH_TURBO_OFF):

* ``events``        worker_send_task_events (task-received/started/succeeded per task,
                    sent in batches by celeryapp/overrides/consumer.py)
* ``started``       task_track_started (a STARTED result stored before each task)
* ``acks_late``     acks late + prefetch 1 -> Celery's defaults (ack early, prefetch 4)

(The result store's success guard and the recent list cost no round trip of their
own since they moved into the backend's store script, so they are not listed.)
"""
from __future__ import annotations

import os

from bench import turbo_tasks  # noqa: F401  (the bench tasks)
from celeryapp import app

KNOWN = ("events", "started", "acks_late")
# not costs but settings tried by hand (not part of --ablate): a larger prefetch window
SETTINGS = {"prefetch4": 4, "prefetch16": 16}
OFF = {name for name in os.environ.get("BENCH_TURBO_OFF", "").split(",") if name}
if OFF - set(KNOWN) - set(SETTINGS):
    raise ValueError(f"BENCH_TURBO_OFF: unknown {sorted(OFF - set(KNOWN) - set(SETTINGS))}; "
                     f"use {KNOWN + tuple(SETTINGS)}")

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
for name in OFF & set(SETTINGS):
    app.conf.worker_prefetch_multiplier = SETTINGS[name]
if task_settings:
    app.loader.import_default_modules()
    for task in app.tasks.values():  # task options were read from the config at bind time
        for name, value in task_settings.items():
            setattr(task, name, value)
