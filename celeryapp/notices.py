"""Completion notices, the asking side: send ``turbo.notify`` when a task or workflow ends.

Delivery runs as its own task (``turbo.notify``, tasks/notify.py) so it is retried
with backoff on failure, whichever process submitted the work, and a Redis marker
makes it happen once even if the hook that asked for it ran twice.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .core.names import DEFAULT_QUEUE, NOTIFY_TASK


def payload(kind: str, item_id: str, state: str, summary: Any) -> dict:
    return {"id": item_id, "kind": kind, "state": state, "summary": summary}


def notify_later(kind: str, item_id: str, state: str, summary: Any, spec: Mapping) -> None:
    from .factory import app  # built from the environment on first use

    app.send_task(NOTIFY_TASK, args=[payload(kind, item_id, state, summary), dict(spec)],
                  queue=DEFAULT_QUEUE)


def summary(result: Any) -> Any:
    """What a notice or a workflow's state keeps of a result: a reference and a glance,
    not the rows."""
    if not isinstance(result, dict):
        text = json.dumps(result, default=str)
        return {"value": result} if len(text) <= 500 else {"preview": text[:500]}
    keep = {key: result[key] for key in ("row_count", "truncated", "parquet_path", "engine",
                                         "elapsed_s", "is_error", "cost_usd", "session_id",
                                         "num_turns", "duration_s") if key in result}
    if isinstance(result.get("result"), str):
        keep["result_preview"] = result["result"][:300]
    return keep
