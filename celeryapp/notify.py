"""Completion notices: a webhook POST of JSON and/or a file in a directory.

Delivery runs as its own task (``turbo.notify``) so it is retried with backoff
on failure, whichever process submitted the work, and a Redis marker makes it
happen once even if the hook that asked for it ran twice.
"""
from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

NOTIFY_TASK = "turbo.notify"
WEBHOOK_TIMEOUT_S = 10.0


class DeliveryFailed(Exception):
    """The webhook did not accept the notice (network error or non-2xx)."""


def check_spec(spec: Any) -> dict:
    """``{"webhook": "https://...", "dir": "/path"}`` with at least one of them."""
    if not isinstance(spec, Mapping) or not (spec.get("webhook") or spec.get("dir")):
        raise ValueError("notify must be a mapping with 'webhook' (http(s) URL) and/or 'dir'")
    unknown = set(spec) - {"webhook", "dir"}
    if unknown:
        raise ValueError(f"notify: unknown field(s) {', '.join(sorted(unknown))}")
    webhook = spec.get("webhook")
    if webhook and not str(webhook).startswith(("http://", "https://")):
        raise ValueError(f"notify.webhook must be an http(s) URL, got {webhook!r}")
    return {key: str(value) for key, value in spec.items() if value}


def payload(kind: str, item_id: str, state: str, summary: Any) -> dict:
    return {"id": item_id, "kind": kind, "state": state, "summary": summary}


def notify_later(kind: str, item_id: str, state: str, summary: Any, spec: Mapping) -> None:
    from . import app

    app.send_task(NOTIFY_TASK, args=[payload(kind, item_id, state, summary), dict(spec)],
                  queue="default")


def post_webhook(url: str, body: dict) -> int:
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "agent-turbo-notify"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"webhook {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryFailed(f"webhook {url} unreachable: {exc}") from None


def write_file(directory: str, body: dict) -> Path:
    """``<dir>/<id>.json``, written atomically so a reader never sees half a file."""
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{body['id']}.json"
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".notice-")
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, default=str)
    os.replace(tmp, target)
    return target
