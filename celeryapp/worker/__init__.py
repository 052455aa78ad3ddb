"""What runs only inside workers: signal hooks (:mod:`.hooks`), custom inspect and
control commands (:mod:`.control`), the running-work registry they read
(:mod:`.running`) and the per-host worker entry point (:mod:`.host`, ``turbo-worker``)."""
