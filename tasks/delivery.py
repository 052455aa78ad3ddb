"""Delivering one completion notice: a webhook POST of JSON and/or a file in a directory.

No Celery here: ``turbo.notify`` (tasks/notify.py) retries a failed POST with backoff
and makes delivery happen once.
"""
from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

WEBHOOK_TIMEOUT_S = 10.0


class DeliveryFailed(Exception):
    """The webhook did not accept the notice (network error or non-2xx)."""


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
