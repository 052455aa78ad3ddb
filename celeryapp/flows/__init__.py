"""Workflows: DAGs of query, agent and task steps (the README's "Workflows").

:mod:`.spec` validates a workflow (YAML, JSON or a dict) before anything runs,
:mod:`.engine` starts steps whose needs succeeded and records their outcomes,
:mod:`.store` keeps each workflow's state in Redis. Use from any process::

    from celeryapp import flows
    flow_id = flows.submit("checkout.yaml")
    flows.get_state(flow_id); flows.wait(flow_id); flows.cancel(flow_id)
"""
from __future__ import annotations

from .engine import (
                     TERMINAL,
                     cancel,
                     dispatch_ready,
                     flow_report,
                     get_state,
                     prepare,
                     step_failed,
                     step_revoked,
                     step_started,
                     step_succeeded,
                     submit,
                     wait,
)
from .spec import FlowSpecError

__all__ = ["FlowSpecError", "TERMINAL", "cancel", "dispatch_ready", "flow_report", "get_state",
           "prepare", "step_failed", "step_revoked", "step_started", "step_succeeded", "submit",
           "wait"]
