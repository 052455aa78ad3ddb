"""Workflows: DAGs of query, agent and task steps (the README's "Workflows").

:mod:`.spec` validates a workflow (YAML, JSON or a dict) before anything runs,
:mod:`.engine` starts steps whose needs succeeded and records their outcomes,
:mod:`.store` keeps each workflow's state in Redis (:mod:`.layout` the keys,
``flows.lua`` the transitions, named replies in :mod:`.replies`). Use from any process::

    from celeryapp import flows
    flow_id = flows.submit("checkout.yaml")
    flows.get_state(flow_id); flows.wait(flow_id); flows.cancel(flow_id)

The names below load on first use, so that the ``turbo`` shell can import
:mod:`.layout` (standard library only) without jinja2, pydantic or Celery.
"""
from __future__ import annotations

_ENGINE = ("TERMINAL", "cancel", "dispatch_ready",
           "flow_report", "get_state", "prepare", "repair", "settle", "step_failed",
           "step_revoked", "step_started", "step_succeeded", "submit", "summary_state", "wait")

__all__ = ["FlowSpecError", "Start", "StartReply", "creation_command", *_ENGINE]


def __getattr__(name: str):
    if name in _ENGINE:
        from . import engine

        return getattr(engine, name)
    if name == "creation_command":  # `turbo submit flow` (the shell imports nothing else)
        from .layout import creation_command

        return creation_command
    if name in ("Start", "StartReply"):
        from . import replies

        return getattr(replies, name)
    if name == "FlowSpecError":
        from .spec import FlowSpecError

        return FlowSpecError
    raise AttributeError(f"module 'celeryapp.flows' has no attribute {name!r}")
