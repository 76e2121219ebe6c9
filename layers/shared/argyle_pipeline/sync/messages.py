"""What arrives on the events queue, as the sync reads it: a webhook the receiver queued, or one of
the sync's own messages (a listing's continuation, an operator's re-sync request), and what makes
two deliveries "the same event" (the idempotency key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from argyle_pipeline.argyle.activity import parse_json
from argyle_pipeline.argyle.webhook_events import EventData, MalformedWebhook, parse_webhook
from argyle_pipeline.aws.event_queue import decode_body, dedupe_key

CONTINUATION_EVENT = "argyle_sync.continuation"
# Queued by `argyle-synced resync`: list the whole account and drop what Argyle no longer has.
RESYNC_EVENT = "argyle_sync.resync"
FULLY_SYNCED = "activities.fully_synced"
PARTIALLY_SYNCED = "activities.partially_synced"
ADDED = "activities.added"
UPDATED = "activities.updated"
REMOVED = "activities.removed"
USERS_FULLY_SYNCED = "users.fully_synced"
LISTING_EVENTS = frozenset({FULLY_SYNCED, PARTIALLY_SYNCED, ADDED})
# Events whose identical body never announces anything new, in v1 and v2: a removal is final
# (Argyle never reuses an id); activities'/gigs' *_synced fire once, at the account's first scan
# (later changes come as added/updated/removed); users.fully_synced carries the user's record
# itself, which only grows (the same bytes are the same record, and a late copy must not put an
# older one back). A copy of these is only ever a retry; any other event's copy that arrives after
# its last run began is processed again. See `dispatch.needs_fresh_read`.
ONCE_ONLY_EVENTS = frozenset({
    REMOVED, FULLY_SYNCED, PARTIALLY_SYNCED, USERS_FULLY_SYNCED,
    "gigs.removed", "gigs.fully_synced", "gigs.partially_synced"})


@dataclass(frozen=True)
class SyncMessage:
    """One SQS record, as the receiver (or a continuation) queued it."""

    body: bytes
    group_id: str
    correlation_id: str
    received_at_ms: int
    message_id: str = ""
    # Set by `argyle-synced replay`: process this body again, keyed apart from its first delivery.
    replay_id: str = ""


def message_from_sqs_record(record: Mapping[str, Any]) -> SyncMessage:
    """From a Lambda SQS record (messageAttributes as {name: {stringValue, dataType}})."""
    attributes = record.get("messageAttributes") or {}

    def attribute(name: str) -> str | None:
        value = attributes.get(name) or {}
        text = value.get("stringValue", value.get("StringValue"))
        return str(text) if text is not None else None

    body = decode_body(str(record.get("body", "")), attribute("body_encoding"))
    system = record.get("attributes") or {}
    received = attribute("received_at_ms") or system.get("SentTimestamp") or "0"
    return SyncMessage(
        body=body,
        group_id=str(system.get("MessageGroupId", "")),
        correlation_id=attribute("correlation_id") or dedupe_key(body)[:32],
        received_at_ms=int(received),
        message_id=str(record.get("messageId", "")),
        replay_id=attribute("replay_id") or "",
    )


class Continuation(BaseModel):
    """The rest of a listing, queued by the invocation that ran short of time. Its body is a
    function of (origin, part, cursor) alone, so a retried part re-sends the very same message."""

    model_config = ConfigDict(extra="ignore")

    origin_dedupe_key: str
    origin_event: str
    part: int = Field(ge=1)
    account: str
    user: str | None = None
    from_start_date: str | None = None
    to_start_date: str | None = None
    cursor: dict[str, str]
    # What the last part records: available_from/to (ISO 'Z'), available_count, days_synced.
    origin: dict[str, Any] = Field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        # (origin, part), not the cursor: if part n runs twice and stops at different pages, the two
        # continuations n+1 it sends share this key and only the first one runs.
        return hashlib.sha256(f"{self.origin_dedupe_key}#part{self.part}".encode()).hexdigest()

    def body(self) -> bytes:
        doc = {"event": CONTINUATION_EVENT, "data": self.model_dump()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


class ResyncRequest(BaseModel):
    """`argyle-synced resync ACCOUNT`: Argyle's whole listing of the account becomes the copy."""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1)
    user: str | None = None
    request_id: str = Field(min_length=8)  # unique per request: its idempotency key and resync marker

    def body(self) -> bytes:
        return json.dumps({"event": RESYNC_EVENT, "data": self.model_dump()}, sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class ParsedMessage:
    event: str
    data: EventData | Continuation | ResyncRequest | None
    idempotency_key: str  # what makes two deliveries "the same event"

    @property
    def is_continuation(self) -> bool:
        return isinstance(self.data, Continuation)


def parse_message(message: SyncMessage) -> ParsedMessage:
    """Raises MalformedWebhook (permanent: the message goes to the DLQ after its retries)."""
    event, data = parse_webhook(message.body)
    if event == CONTINUATION_EVENT:
        doc = parse_json(message.body)
        try:
            continuation = Continuation.model_validate(doc.get("data"))
        except ValueError:
            # `from None`: pydantic's message quotes the input, and a traceback would print it.
            raise MalformedWebhook("continuation message is invalid") from None
        return ParsedMessage(event, continuation, continuation.idempotency_key)
    key = dedupe_key(message.body)
    if message.replay_id:
        key = hashlib.sha256(f"{key}#replay:{message.replay_id}".encode()).hexdigest()
    if event == RESYNC_EVENT:
        try:
            request = ResyncRequest.model_validate(parse_json(message.body).get("data"))
        except (ValueError, AttributeError):
            raise MalformedWebhook("resync request is invalid") from None
        return ParsedMessage(event, request, key)
    return ParsedMessage(event, data, key)
