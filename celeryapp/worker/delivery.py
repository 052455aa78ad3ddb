"""What a worker checks before a task's body runs: deliveries that must not run it.

* **A message delivered again after its task ended.** kombu marks a restored message
  ``redelivered`` (its worker died, or the visibility timeout passed); when the task's
  final state is stored, the work was done: a second run would spend it again (an agent
  run's money) and could overwrite its result. It is acknowledged unrun.
* **A workflow step, on every delivery.** The repair pass publishes a step again, under
  its one task id, when its first publish was not recorded. The step's start transition
  (one script, in the start hook: :func:`start_step`) checks both cases at no extra round
  trip: a copy that arrives after the step ended is acknowledged unrun and the step's
  transition applied now; a copy of an attempt that another message started already is
  acknowledged unrun while a live worker holds that message (kombu's unacked records name
  their holder: :mod:`celeryapp.core.holders`). The same message delivered again - its
  worker or its pool process died - or a copy whose holder is gone, runs. Under
  ``TURBO_STOCK_CELERY`` no holder is recorded: a copy runs, as before. A step cancelled
  with its workflow is not run either, even by a worker that missed the revoke broadcast
  (it was down, or is new): REVOKED is stored.

:class:`CheckedTask` is the app's base task class (``Celery(task_cls=...)``), so plain
``@app.task`` steps of a workflow are checked as the query and agent tasks are.
"""
from __future__ import annotations

import logging

from celery import states
from celery.exceptions import Ignore

from celeryapp import flows
from celeryapp.core.holders import held_by_live
from celeryapp.core.names import FLOW_HEADER, STEP_HEADER, header
from celeryapp.flows.replies import Start
from celeryapp.overrides.redaction import RedactingTask

log = logging.getLogger(__name__)

STEP_START = "turbo_step_start"  # request attribute: what the start transition replied


class CheckedTask(RedactingTask):
    """The app's base task class: each delivery is checked (:func:`skip_if_done`) before
    the body runs; requests redact ``info()`` (:class:`RedactingTask`)."""

    def __call__(self, *args, **kwargs):
        skip_if_done(self)
        return super().__call__(*args, **kwargs)


def start_step(task, flow: str) -> None:
    """The start transition of a workflow step (the task_prerun hook); its reply is kept
    on the request for :func:`skip_if_done`. A failure is Celery's to log (the step runs)."""
    request = task.request
    step = header(request, STEP_HEADER)
    tag = str((getattr(request, "properties", None) or {}).get("delivery_tag") or "")
    args = (flow, step, request.id, request.hostname, (request.retries or 0) + 1, tag)
    reply = flows.step_started(*args)
    if reply.outcome is Start.COPY and not _held_by_live(task, reply.tag):
        reply = flows.step_started(*args, take_over=True)  # the other copy's worker is gone
    setattr(request, STEP_START, reply)


def _held_by_live(task, tag: str) -> bool:
    try:
        with task.app.pool.acquire(block=True) as connection:
            with connection.default_channel.conn_or_acquire() as client:
                return held_by_live(client, tag)
    except Exception as exc:  # noqa: BLE001 - run it, as without the check
        log.warning("%s[%s] could not check who holds message %s (%r): running this copy",
                    task.name, task.request.id, tag, exc)
        return False


def skip_if_done(task) -> None:
    """Raise Ignore (the message is acknowledged, nothing stored) when this delivery must
    not run: its task ended already, or it is a second copy of a running workflow step."""
    request = task.request
    if request.id is None or request.is_eager:
        return
    flow = header(request, FLOW_HEADER)
    started = getattr(request, STEP_START, None) if flow else None
    outcome = started.outcome if started is not None else None
    if outcome is Start.CANCELLED:
        log.warning("%s[%s] workflow %s step %s was cancelled with its workflow (this worker "
                    "had not heard the revoke): acknowledged without running it", task.name,
                    request.id, flow, header(request, STEP_HEADER))
        task.backend.mark_as_revoked(request.id, "its workflow was cancelled", request=request)
        raise Ignore()
    if outcome is Start.COPY:
        log.warning("%s[%s] workflow %s step %s: a copy of this attempt is running (message "
                    "%s, held by a live worker): this one is acknowledged without running",
                    task.name, request.id, flow, header(request, STEP_HEADER), started.tag)
        raise Ignore()
    if outcome in (Start.STARTED, Start.STALE):
        return  # the start transition found no final state stored
    # ENDED, or no start transition recorded (not a step, its hook failed): the stored state
    redelivered = (getattr(request, "redelivered", None)
                   or (request.delivery_info or {}).get("redelivered"))
    if not (redelivered or flow):
        return
    try:
        meta = task.backend.get_task_meta(request.id, cache=False)
        state = meta.get("status")
    except Exception as exc:  # noqa: BLE001 - the backend is down: run, as without the check
        log.warning("%s[%s] redelivered; its stored state could not be read (%r): running "
                    "it", task.name, request.id, exc)
        return
    if state in states.READY_STATES:
        log.warning("%s[%s] %s after it ended %s: acknowledged without running it again",
                    task.name, request.id, "redelivered" if redelivered else "delivered again",
                    state)
        settle_redelivered(request, meta)  # a workflow step: its transition, now
        raise Ignore()


def settle_redelivered(request, meta) -> None:
    """A message of a workflow step whose task already ended (acknowledged unrun): apply
    the transition its stored state calls for, so the workflow moves on now rather than at
    the next repair pass (its worker died between the stored result and the transition).
    Never raises: the repair pass is the backstop."""
    flow = header(request, FLOW_HEADER)
    if not flow:
        return
    try:
        flows.settle(flow, header(request, STEP_HEADER), request.id, meta)
    except Exception as exc:  # noqa: BLE001 - never raises: the repair pass is the backstop
        log.warning("workflow %s: step %s: transition of its redelivered task %s failed: %r",
                    flow, header(request, STEP_HEADER), request.id, exc)
