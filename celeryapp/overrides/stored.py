"""What both result backends (the overriding one and TURBO_STOCK_CELERY's) store beyond
Celery: the task's args redacted, and the task's place in the recent list ``turbo ls``
reads."""
from __future__ import annotations

from celeryapp.core.names import FLOW_HEADER, NOTIFY_TASK, header
from celeryapp.core.redaction import redact


def recent_member(request, task_id: str) -> str:
    """``task:<id>`` for the recent list, or "" for what ``turbo ls`` leaves out:
    workflow steps (their workflow is listed), notices and health probes."""
    name = getattr(request, "task", None) or ""
    if not isinstance(name, str):
        name = getattr(name, "name", "") or ""
    if name.startswith(("turbo.flow.", "turbo.health.")) or name == NOTIFY_TASK:
        return ""
    if request is not None and header(request, FLOW_HEADER):
        return ""
    return f"task:{task_id}"



class RedactedResultMeta:
    """Mixin for a Celery result backend (``Backend._get_result_meta``)."""

    def _get_result_meta(self, *args, **kwargs):
        """``result_extended`` stores the task's args with each state: redacted, as the
        message's argsrepr is, so a secret passed by mistake does not sit in the
        backend (and Flower) until the result expires. The task runs with its own."""
        meta = super()._get_result_meta(*args, **kwargs)
        for field in ("args", "kwargs"):
            value = meta.get(field)
            if value and not isinstance(value, bytes):
                meta[field] = redact(value)
        return meta
