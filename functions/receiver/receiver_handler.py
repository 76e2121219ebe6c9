"""POST /webhooks/argyle: verify Argyle's signature and put the genuine event on the FIFO queue.

Thin on purpose: the rules are in argyle_pipeline.receiving.webhook_intake. Only what this path uses is
imported, because a cold start here delays Argyle's delivery.
"""

from __future__ import annotations

import json
from typing import Any

from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.secret_values import RefreshLimiter, SecretMalformed, SecretUnavailable, webhook_secrets
from argyle_pipeline.receiving.receiver_telemetry import RequestTelemetry
from argyle_pipeline.receiving.settings import receiver_settings
from argyle_pipeline.receiving.webhook_intake import (
    BadRequestBody,
    IntakeResult,
    handle_webhook,
    request_from_apigw,
    source_ip,
)

telemetry = RequestTelemetry(service="argyle-receiver")

_queue: EventQueue | None = None
_cold_start = True
_secret_refresh = RefreshLimiter(interval=10.0)


def event_queue() -> EventQueue:
    """One SQS client per container, made on first use (tests replace it with set_queue)."""
    global _queue
    if _queue is None:
        settings = receiver_settings()
        _queue = EventQueue(settings.queue_url, max_message_bytes=settings.max_message_bytes)
    return _queue


def set_queue(queue: EventQueue | None) -> None:
    global _queue
    _queue = queue


def _http(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"},
            "body": json.dumps(body, separators=(",", ":"))}


def _cached_secrets() -> tuple[str, ...]:
    settings = receiver_settings()
    return webhook_secrets(settings.webhook_secret_id, settings.secret_max_age)


def _refreshed_secrets() -> tuple[str, ...] | None:
    """A fresh read when the cached secrets do not verify, at most once per 10 s (see RefreshLimiter)."""
    if not _secret_refresh.allow():
        return None
    settings = receiver_settings()
    return webhook_secrets(settings.webhook_secret_id, settings.secret_max_age, force=True)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _cold_start
    cold_start, _cold_start = _cold_start, False
    settings = receiver_settings()
    correlation_id = ""
    try:
        request = request_from_apigw(event)
    except BadRequestBody as exc:
        result = IntakeResult(status=400, body={"error": str(exc)}, outcome="bad_base64")
    else:
        correlation_id = request.request_id
        try:
            result = handle_webhook(request, secrets=_cached_secrets, queue=event_queue(),
                                    allowed_ips=settings.allowed_source_ips, refreshed_secrets=_refreshed_secrets,
                                    max_body_bytes=settings.max_message_bytes)
        except (SecretUnavailable, SecretMalformed) as exc:
            # The secret could not be read: fail closed, but with 5xx so Argyle retries later.
            telemetry.error("webhook secret unavailable", error=str(exc), correlation_id=correlation_id)
            result = IntakeResult(status=503, body={"error": "temporarily unable to verify, retry later"},
                                  outcome="secret_unavailable")

    telemetry.outcome(
        accepted=result.accepted, status=result.status, outcome=result.outcome, event_name=result.event_name,
        request_id=getattr(context, "aws_request_id", ""), correlation_id=correlation_id,
        cold_start=cold_start, source_ip=source_ip(event), **result.log_fields,
    )
    return _http(result.status, result.body)
