"""What both result backends (the overriding one and TURBO_STOCK_CELERY's) store beyond
Celery: the task's args redacted and bounded, and the task's place in the recent list
``turbo ls`` reads."""
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



STORED_TEXT_CHARS = 1000  # of each string argument kept in a stored state
STORED_ITEMS = 50  # of each list or mapping


def clip(value, text: int = STORED_TEXT_CHARS, items: int = STORED_ITEMS):
    """A bounded copy for display: long strings cut (with their full length said), long
    lists and mappings cut to their first ``items``."""
    if isinstance(value, str):
        return value if len(value) <= text else \
            f"{value[:text]}... [{len(value):,} chars in all]"
    if isinstance(value, (list, tuple)):
        kept = [clip(item, text, items) for item in value[:items]]
        if len(value) > items:
            kept.append(f"... [{len(value):,} items in all]")
        return kept
    if isinstance(value, dict):
        kept = {key: clip(item, text, items) for key, item in list(value.items())[:items]}
        if len(value) > items:
            kept["..."] = f"[{len(value):,} keys in all]"
        return kept
    return value


class RedactedResultMeta:
    """Mixin for a Celery result backend (``Backend._get_result_meta``)."""

    def _get_result_meta(self, *args, **kwargs):
        """``result_extended`` stores the task's args with each state: redacted, as the
        message's argsrepr is, so a secret passed by mistake does not sit in the
        backend (and Flower) until the result expires, and bounded, so a megabyte of
        SQL is not written again with every state. The task runs with its own."""
        meta = super()._get_result_meta(*args, **kwargs)
        for field in ("args", "kwargs"):
            value = meta.get(field)
            if value and not isinstance(value, bytes):
                meta[field] = clip(redact(value))
        return meta
