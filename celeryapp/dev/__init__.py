"""The development harness: a private Redis (:mod:`.localredis`), local workers
(:mod:`.localworker`) and the demo (:mod:`.demo`). Used by ``make demo``, the tests
and ``bench/``; never by a worker in production."""
