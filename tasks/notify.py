"""``turbo.notify``: deliver one completion notice, retried with backoff, once."""
from __future__ import annotations

from celeryapp import app
from celeryapp.core import backoff
from celeryapp.core.names import NOTIFY_TASK

from .delivery import DeliveryFailed, post_webhook, write_file

MAX_ATTEMPTS = 6
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 300.0  # 1, 2, 4, 8, 16 s: the backoff's steps, unjittered
DONE_TTL_S = 7 * 24 * 3600


@app.task(bind=True, name=NOTIFY_TASK, max_retries=MAX_ATTEMPTS - 1, acks_late=True)
def deliver(self, body: dict, spec: dict) -> dict:
    client = app.backend.client
    marker = f"turbo:notified:{body['kind']}:{body['id']}"
    # first claim wins; a redelivery of the same notify task may go on
    claimed = client.set(marker, self.request.id, nx=True, ex=DONE_TTL_S)
    owner = client.get(marker)
    if not claimed and owner not in (self.request.id, self.request.id.encode()):
        return {"delivered": False, "reason": "already delivered"}
    delivered = {}
    if spec.get("dir"):
        delivered["file"] = str(write_file(spec["dir"], body))
    if spec.get("webhook"):
        try:
            delivered["webhook_status"] = post_webhook(spec["webhook"], body)
        except DeliveryFailed as exc:
            countdown = backoff.ceiling(self.request.retries, RETRY_FIRST_S, RETRY_MAX_S)
            raise self.retry(exc=exc, countdown=countdown) from exc
    return {"delivered": True, **delivered}
