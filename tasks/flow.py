"""``turbo.flow.start``: start a workflow whose state a lean client stored."""
from __future__ import annotations

from celeryapp import app


@app.task(name="turbo.flow.start", acks_late=True)
def start_flow(flow_id: str) -> list[str]:
    from celeryapp.flows import dispatch_ready

    return dispatch_ready(flow_id)
