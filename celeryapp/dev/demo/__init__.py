"""``make demo``: the main job on one machine (``python -m celeryapp.dev.demo``).

:mod:`.run` starts and stops everything in order (and parses the command line),
:mod:`.services` starts Redis, the workers and Flower, :mod:`.workload` submits the
queries and agent runs and waits for them, :mod:`.fetch` reads results in another
process (``--fetch``), :mod:`.report` prints everything the demo shows, :mod:`.data`
builds the sample database, :mod:`.state` records what was started so ``--down`` can
stop it.
"""
