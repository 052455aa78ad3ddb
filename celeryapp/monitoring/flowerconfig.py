"""Flower's configuration for Agent Turbo: a tornado config file, not a module to import.

Flower executes this file when started by ``python -m celeryapp.monitoring.flower`` (which
passes ``--conf=<this file>``) or by ``celery -A celeryapp flower`` (the app sets
``FLOWER_CONF`` to it, see ``celeryapp.monitoring.flower.use_project_config``). Every
top-level name that matches a Flower option sets that option; the values come
from ``celeryapp.monitoring.flower.flower_options``: login from TURBO_FLOWER_USER /
TURBO_FLOWER_PASSWORD (required: without a login this file stops Flower with
exit code 2 unless TURBO_FLOWER_DEV=1), port, address, persistent state
(TURBO_FLOWER_DB, saved every TURBO_FLOWER_STATE_SAVE_INTERVAL ms), max_tasks,
and a task formatter that masks secrets. Options given as FLOWER_* variables or
on the command line win over these.

To use your own file and keep these settings, start it with::

    exec(open(__import__("celeryapp.monitoring.flowerconfig").flowerconfig.__file__).read())
"""
if __name__ != "celeryapp.monitoring.flowerconfig":  # executed by Flower (tornado), not imported
    from celeryapp.monitoring.flower import apply_config as _apply_config

    _apply_config(globals())
