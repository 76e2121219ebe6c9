"""The receiver's rules, without AWS: verify, parse just enough to route, enqueue, answer.

Order matters: the signature is checked on the exact raw bytes before anything is parsed, so a
forged request never reaches the parser or the queue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from argyle_pipeline.aws.event_queue import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MessageTooLarge,
    QueuedEvent,
    QueueUnavailable,
    delivery_keys,
)
from argyle_pipeline.receiving.signature import SIGNATURE_HEADER, InvalidSignature, verify

# Argyle's published webhook source addresses (webhooks-overview.txt). Argyle says they may change,
# so checking them is an opt-in fallback, never the main defence.
ARGYLE_WEBHOOK_IPS = frozenset({"34.27.251.226", "34.122.50.253", "35.188.163.115", "35.226.53.251"})


class Queue(Protocol):
    def send(self, event: QueuedEvent) -> str: ...


@dataclass  # not frozen: cheaper to build, and these are made on every request
class WebhookRequest:
    """What the receiver needs of an HTTP request, whatever API Gateway flavour carried it."""

    body: bytes
    headers: Mapping[str, str]  # lower-cased names
    source_ip: str | None
    request_id: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass  # not frozen: cheaper to build, and these are made on every request
class IntakeResult:
    status: int
    body: dict[str, Any]
    outcome: str  # "accepted" or the rejection reason; a metric dimension and a log field
    event_name: str | None = None
    log_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


class BadRequestBody(ValueError):
    pass


def request_from_apigw(event: Mapping[str, Any]) -> WebhookRequest:
    """Build a WebhookRequest from an API Gateway proxy event (HTTP API 2.0 or REST 1.0)."""
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
            # Canonical form only: Python 3.11 and 3.12 accept data after the padding ("AAAA=")
            # where 3.13 refuses it; comparing with the re-encoding answers the same on every one.
            canonical = base64.b64encode(body)
            if canonical != (raw.encode("ascii") if isinstance(raw, str) else bytes(raw)):
                raise ValueError("not canonical base64")
        except (binascii.Error, ValueError) as exc:
            raise BadRequestBody("body is marked base64 but is not valid base64") from exc
    else:
        # surrogatepass: a lone surrogate (valid in the event's JSON, impossible in UTF-8) gives
        # bytes that are not UTF-8, so the request is rejected (401/400) instead of crashing (500).
        body = raw.encode("utf-8", errors="surrogatepass") if isinstance(raw, str) else bytes(raw)
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()
               if isinstance(name, str) and isinstance(value, str)}
    context = event.get("requestContext") or {}
    return WebhookRequest(body=body, headers=headers, source_ip=source_ip(event),
                          request_id=str(context.get("requestId") or ""))


def source_ip(event: Mapping[str, Any]) -> str | None:
    """The caller's address as API Gateway saw it (HTTP API 2.0 or REST 1.0), even for a request
    whose body cannot be read."""
    context = event.get("requestContext") or {}
    return (context.get("http") or {}).get("sourceIp") or (context.get("identity") or {}).get("sourceIp")


def message_group(payload: Mapping[str, Any], event_name: str) -> str:
    """Per-account ordering: the account's events share a group; `users.*` events use the user."""
    data = payload.get("data")
    data = data if isinstance(data, Mapping) else {}
    account, user = data.get("account"), data.get("user")
    if event_name.startswith("users.") and _group_safe(user):
        return f"user:{user}"
    if _group_safe(account):
        return f"account:{account}"
    if _group_safe(user):
        return f"user:{user}"
    if _group_safe(event_name[:100]):
        return f"event:{event_name[:100]}"
    return f"event:{hashlib.sha256(event_name.encode('utf-8', errors='surrogatepass')).hexdigest()[:32]}"


# SQS group ids: at most 128 characters, each alphanumeric or punctuation (no space, no control).
# Ours are a prefix and at most 100 of them (a regex: this runs on every request).
_GROUP_SAFE = re.compile("[" + re.escape(string.ascii_letters + string.digits + string.punctuation) + "]{1,100}")


def _group_safe(value: Any) -> bool:
    return isinstance(value, str) and _GROUP_SAFE.fullmatch(value) is not None


def _reject(status: int, outcome: str, message: str, **log_fields: Any) -> IntakeResult:
    return IntakeResult(status=status, body={"error": message}, outcome=outcome, log_fields=log_fields)


def handle_webhook(
    request: WebhookRequest,
    secrets: Callable[[], Iterable[str]],
    queue: Queue,
    *,
    allowed_ips: frozenset[str] | None = None,
    refreshed_secrets: Callable[[], Iterable[str] | None] | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> IntakeResult:
    """Decide what to answer Argyle, enqueuing the event when it is genuine.

    `secrets` gives the cached secrets; `refreshed_secrets`, if given, re-reads them (or returns
    None when a re-read is not allowed now) and is tried once when the cached ones do not match,
    so a secret rotated since the cache was filled is accepted at once. A body longer than
    `max_body_bytes` (the queue's limit) can never be enqueued, so it is refused before any secret
    is read or HMAC computed.
    """
    if allowed_ips is not None and request.source_ip not in allowed_ips:
        return _reject(403, "source_ip_not_allowed", "source address is not an Argyle webhook address")

    # Before any HMAC: a forged giant body would otherwise cost a full pass per secret, and up to
    # twice as many after the rotation re-read.
    if len(request.body) > max_body_bytes:
        return _reject(413, "too_large", "body is too large for the queue", bytes=len(request.body))

    signature = request.header(SIGNATURE_HEADER)
    try:
        try:
            verify(request.body, signature, secrets())
        except InvalidSignature as first:
            fresh = refreshed_secrets() if refreshed_secrets and first.reason != "missing_signature" else None
            if fresh is None:
                raise
            verify(request.body, signature, fresh)
    except InvalidSignature as exc:
        return _reject(401, exc.reason, "invalid signature" if exc.reason != "missing_signature"
                       else "missing X-Argyle-Signature header")

    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return _reject(400, "not_utf8", "body is not UTF-8 text")
    try:
        payload = json.loads(text)
    except RecursionError:
        return _reject(400, "too_deep", "body is nested too deeply")
    except ValueError:
        return _reject(400, "not_json", "body is not valid JSON")
    if not isinstance(payload, dict):
        return _reject(400, "not_object", "body must be a JSON object")
    event_name = payload.get("event")
    if not isinstance(event_name, str) or not event_name:
        return _reject(400, "no_event", "body must have a string 'event' field")

    # One SQS deduplication id per delivery: a later delivery of the same bytes may be a new change.
    key, deduplication_id = delivery_keys(request.body, request.request_id)
    queued = QueuedEvent(
        body=request.body,
        event_name=event_name[:256],
        group_id=message_group(payload, event_name),
        dedupe_key=key,
        correlation_id=request.request_id or key[:32],
        received_at_ms=now_ms(),
        text=text,
        deduplication_id=deduplication_id,
    )
    try:
        message_id = queue.send(queued)
    except MessageTooLarge:
        return _reject(413, "too_large", "body is too large for the queue", bytes=len(request.body))
    except QueueUnavailable as exc:
        # Never 2xx: Argyle retries on failure, and the event is not lost.
        return _reject(503, "queue_unavailable", "could not store the event, retry later", cause=str(exc))
    return IntakeResult(
        status=202,
        body={"status": "accepted", "event": event_name, "dedupe_key": key},
        outcome="accepted",
        event_name=event_name,
        log_fields={"message_id": message_id, "dedupe_key": key, "group": queued.group_id},
    )
