"""``make demo``: the main job on one machine (``python -m celeryapp.dev.demo``).

:mod:`.run` starts and stops everything and drives the workload, :mod:`.data` builds
the sample database, :mod:`.state` records what was started so ``--down`` can stop it.
"""
