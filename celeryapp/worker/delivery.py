"""What a worker checks before a task's body runs: deliveries that must not run it.

* **A message delivered again after its task ended.** kombu marks a restored message
  ``redelivered`` (its worker died, or the visibility timeout passed); when the task's
  final state is stored, the work was done: a second run would spend it again (an agent
  run's money) and could overwrite its result. It is acknowledged unrun. One GET, only
  for redelivered messages and workflow steps.
* **A workflow step is checked on every delivery.** The repair pass publishes a step
  again, under its one task id, when its first publish was not recorded. A copy that
  arrives after the step ended is acknowledged unrun and the step's transition applied
  now. A copy that arrives while another copy of the same attempt is held by a live
  worker (reserved or running) is acknowledged unrun too: each attempt of a step is
  claimed by one message (:func:`celeryapp.core.holders.claim_run`, in the broker's Redis;
  one script per step start). The same message delivered again - its worker died, its
  pool process died - takes the claim back. Under ``TURBO_STOCK_CELERY`` no holder is
  recorded: every copy runs, as before.

:class:`CheckedTask` is the app's base task class (``Celery(task_cls=...)``), so plain
``@app.task`` steps of a workflow are checked as the query and agent tasks are.
"""
from __future__ import annotations

import logging

from celery import states
from celery.exceptions import Ignore

from celeryapp.core.holders import claim_run
from celeryapp.core.names import FLOW_HEADER, RUN_CLAIM_KEY, STEP_HEADER, header
from celeryapp.overrides.redaction import RedactingTask

log = logging.getLogger(__name__)

COPY_OF = "turbo_copy_of"  # request attribute: the delivery tag of the live copy running


class CheckedTask(RedactingTask):
    """The app's base task class: each delivery is checked (:func:`skip_if_done`) before
    the body runs; requests redact ``info()`` (:class:`RedactingTask`)."""

    def __call__(self, *args, **kwargs):
        skip_if_done(self)
        return super().__call__(*args, **kwargs)


def skip_if_done(task) -> None:
    """Raise Ignore (the message is acknowledged, nothing stored) when this delivery must
    not run: its task ended already, or it is a second copy of a running workflow step
    (:func:`held_elsewhere`, called by the step's start hook)."""
    request = task.request
    redelivered = (getattr(request, "redelivered", None)
                   or (request.delivery_info or {}).get("redelivered"))
    flow = header(request, FLOW_HEADER)
    if not (redelivered or flow) or request.id is None or request.is_eager:
        return
    try:
        meta = task.backend.get_task_meta(request.id, cache=False)
        state = meta.get("status")
    except Exception as exc:  # the backend is down: run, as without the check
        log.warning("%s[%s] redelivered; its stored state could not be read (%r): running "
                    "it", task.name, request.id, exc)
        return
    if state in states.READY_STATES:
        log.warning("%s[%s] %s after it ended %s: acknowledged without running it again",
                    task.name, request.id, "redelivered" if redelivered else "delivered again",
                    state)
        from celeryapp.worker.hooks import settle_redelivered

        settle_redelivered(request, meta)  # a workflow step: its transition, now
        raise Ignore()
    other = getattr(request, COPY_OF, None)
    if other:
        log.warning("%s[%s] workflow %s step %s: a copy of this attempt is running (message "
                    "%s, held by a live worker): this one is acknowledged without running",
                    task.name, request.id, flow, header(request, STEP_HEADER), other)
        raise Ignore()


def held_elsewhere(task) -> str | None:
    """Claim this attempt of a workflow step for this message; the delivery tag of the
    live copy that has it (this one must not run), else None. Never raises: without the
    broker the step runs, as without the check."""
    request = task.request
    tag = (getattr(request, "properties", None) or {}).get("delivery_tag")
    if not tag or request.id is None or request.is_eager:
        return None
    key = RUN_CLAIM_KEY.format(task_id=request.id, retries=request.retries or 0)
    app = task.app
    expires = (app.conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    try:
        with app.pool.acquire(block=True) as connection:
            with connection.default_channel.conn_or_acquire() as client:
                other = claim_run(client, key, str(tag), int(expires * 1000))
    except Exception as exc:  # noqa: BLE001 - the broker is away: run, as without it
        log.warning("%s[%s] could not claim its run (%r): running it", task.name, request.id,
                    exc)
        return None
    if other:
        setattr(request, COPY_OF, other)
    return other
