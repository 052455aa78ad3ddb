"""``turbo.flow.start``: start a workflow whose state a lean client stored."""
from __future__ import annotations

from celeryapp import app
from celeryapp.core.names import FLOW_START_TASK
from celeryapp.flows import dispatch_ready


@app.task(name=FLOW_START_TASK, acks_late=True)
def start_flow(flow_id: str) -> list[str]:
    return dispatch_ready(flow_id)
