"""Workflows: DAGs of query, agent and task steps (the README's "Workflows").

:mod:`.spec` validates a workflow (YAML, JSON or a dict) before anything runs;
:mod:`.api` builds, submits, reads, waits for and cancels one; :mod:`.transitions`
records each step's start and end and publishes the steps that became ready, with their
templates rendered and the steps a step asks for added (:mod:`.rendering`);
:mod:`.repair_pass` applies what a lost hook or publish left undone. :mod:`.store` keeps
each workflow's state in Redis (:mod:`.layout` the keys; ``flows.lua`` the transitions,
one command each, named replies in :mod:`.replies`). Use from any process::

    from celeryapp import flows
    flow_id = flows.submit("checkout.yaml")
    flows.get_state(flow_id); flows.wait(flow_id); flows.cancel(flow_id)

The names below load on first use, so that the ``turbo`` shell can import
:mod:`.layout` (standard library only) without jinja2, pydantic or Celery.
"""
from __future__ import annotations

import importlib

_FROM = {  # name -> module (relative) that defines it
    **dict.fromkeys(("TERMINAL", "cancel", "dispatch_ready", "get_state", "prepare", "submit",
                     "summary_state", "wait"), ".api"),
    **dict.fromkeys(("flow_report", "settle", "step_failed", "step_revoked", "step_started",
                     "step_succeeded"), ".transitions"),
    "repair": ".repair_pass",
    **dict.fromkeys(("Start", "StartReply"), ".replies"),
    "creation_command": ".layout",  # `turbo submit flow` (the shell imports nothing else)
    "FlowSpecError": ".spec",
}

__all__ = sorted(_FROM)


def __getattr__(name: str):
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'celeryapp.flows' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
