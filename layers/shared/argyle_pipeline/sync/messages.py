"""What arrives on the events queue, as the sync reads it: a webhook the receiver queued, or one of
the sync's own messages (a listing's continuation, an operator's re-sync request), and what makes
two deliveries "the same event" (the idempotency key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from argyle_pipeline.argyle.activity import parse_json
from argyle_pipeline.argyle.webhook_events import EventData, MalformedWebhook, parse_webhook
from argyle_pipeline.aws.event_queue import decode_body, dedupe_key

CONTINUATION_EVENT = "argyle_sync.continuation"
# Queued by `argyle-synced resync`: list the whole account and drop what Argyle no longer has.
RESYNC_EVENT = "argyle_sync.resync"
# Queued by the scheduled reconciler and `argyle-synced reconcile`; continued like a listing.
RECONCILE_EVENT = "argyle_sync.reconcile"
# The ids of an activities.updated / .removed beyond what one invocation checks (CHANGES_PER_PART).
CHANGES_EVENT = "argyle_sync.changes"
# An account's data leaving our tables: queued by `argyle-synced purge`, continued like a listing.
PURGE_EVENT = "argyle_sync.purge"
ACCOUNTS_REMOVED = "accounts.removed"
ACCOUNTS_CONNECTED = "accounts.connected"
FULLY_SYNCED = "activities.fully_synced"
PARTIALLY_SYNCED = "activities.partially_synced"
ADDED = "activities.added"
UPDATED = "activities.updated"
REMOVED = "activities.removed"
USERS_FULLY_SYNCED = "users.fully_synced"
LISTING_EVENTS = frozenset({FULLY_SYNCED, PARTIALLY_SYNCED, ADDED})
# Argyle reporting a purged account connected again: it starts afresh (see sync/purge.py).
RESTART_EVENTS = frozenset({FULLY_SYNCED, PARTIALLY_SYNCED, ACCOUNTS_CONNECTED})


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
    # `argyle-synced replay --publish-changes`: a replay publishes change events only when asked.
    publish_changes: bool = False


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
        publish_changes=attribute("publish_changes") == "true",
    )


class ListingWindow(BaseModel):
    """One start-date window of a listing split into windows that are listed at once: its range
    (inclusive), the cursor of its next page, and its own count tracking (sync/listing.py)."""

    model_config = ConfigDict(extra="ignore")

    from_start_date: str | None = None
    to_start_date: str | None = None
    cursor: dict[str, str] = Field(default_factory=dict)
    done: bool = False
    # first_count, last_count, rows_listed, count_moved: as a sequential listing keeps in `origin`.
    counts: dict[str, Any] = Field(default_factory=dict)


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
    # A large listing split into start-date windows listed at once: each one's own exact cursor
    # (empty: listed as one sequence, on `cursor`).
    windows: list[ListingWindow] = Field(default_factory=list)

    @property
    def idempotency_key(self) -> str:
        # (origin, part), not the cursor: if part n runs twice and stops at different pages, the two
        # continuations n+1 it sends share this key and only the first one runs.
        return hashlib.sha256(f"{self.origin_dedupe_key}#part{self.part}".encode()).hexdigest()

    def body(self) -> bytes:
        doc = {"event": CONTINUATION_EVENT, "data": self.model_dump()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def listing_pass_after(self) -> Continuation:
        """The same range listed again from its first page, as the next pass: its writes carry a
        marker of their own, and its counts start afresh."""
        number = int(self.origin.get("pass") or 1) + 1
        kept = {k: v for k, v in self.origin.items()
                if k not in {"first_count", "last_count", "rows_listed", "count_moved"}}
        marker = hashlib.sha256(f"{self.origin_dedupe_key}#pass{number}".encode()).hexdigest()[:32]
        kept.pop("dated_count", None)  # the next pass plans its windows afresh
        return self.model_copy(update={"origin": {**kept, "pass": number, "pass_marker": marker},
                                       "windows": [], "cursor": {}})


class ResyncRequest(BaseModel):
    """`argyle-synced resync ACCOUNT`: Argyle's whole listing of the account becomes the copy."""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1)
    user: str | None = None
    request_id: str = Field(min_length=8)  # unique per request: its idempotency key and resync marker
    publish_changes: bool = False  # a re-sync is a backfill: change events only when asked

    def body(self) -> bytes:
        return json.dumps({"event": RESYNC_EVENT, "data": self.model_dump()}, sort_keys=True).encode("utf-8")


class ChangeBatch(BaseModel):
    """Part n of an activities.updated / .removed whose ids did not fit one invocation: these ids
    are checked against Argyle exactly as the first part's were."""

    model_config = ConfigDict(extra="ignore")

    origin_dedupe_key: str
    origin_event: str
    part: int = Field(ge=1)
    account: str
    user: str | None = None
    ids: list[str] = Field(min_length=1)

    @property
    def idempotency_key(self) -> str:
        return hashlib.sha256(f"{self.origin_dedupe_key}#part{self.part}".encode()).hexdigest()

    def body(self) -> bytes:
        doc = {"event": CHANGES_EVENT, "data": self.model_dump()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


class Window(BaseModel):
    """Start instants [first, last] (epoch seconds, inclusive) and how many activities Argyle
    counted in it when the window was made."""

    model_config = ConfigDict(extra="ignore")

    first: int
    last: int
    argyle_count: int = Field(ge=0)


class ReconcileJob(BaseModel):
    """A reconcile of one account: the request (part 0, from the scheduler, the CLI, or a listing
    that saw Argyle change under it) and, for parts >= 1, where the previous part stopped.

    scope: recent (re-list the last `recent_days`, then compare counts), full (re-list the whole
    account, as a re-sync), counts (compare counts only)."""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1)
    user: str | None = None
    request_id: str = Field(min_length=8)
    scope: Literal["recent", "full", "counts"] = "recent"
    recent_days: int | None = Field(default=None, ge=0)  # None: the sync's RECONCILE_RECENT_DAYS
    part: int = Field(default=0, ge=0)
    stage: Literal["start", "recent", "count", "bisect", "full", "sweep", "done"] = "start"
    cursor: dict[str, str] = Field(default_factory=dict)
    pending: list[Window] = Field(default_factory=list)
    # A verify of a ranged listing: its range as epoch seconds (None: the whole account).
    drift: dict[str, int] = Field(default_factory=dict)  # found (and repaired) so far, by kind
    argyle_calls: int = 0
    full_rows: int = 0  # rows the full pass has listed so far
    # A large full pass split into start-date windows listed at once: each one's own cursor.
    windows: list[ListingWindow] = Field(default_factory=list)
    # The count stage's figures (Argyle's count, the stored live keys), for the account's health.
    argyle_total: int | None = None
    stored_total: int | None = None

    @property
    def idempotency_key(self) -> str:
        return hashlib.sha256(f"reconcile:{self.account}:{self.request_id}#part{self.part}".encode()).hexdigest()

    def body(self) -> bytes:
        doc = {"event": RECONCILE_EVENT, "data": self.model_dump()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


class PurgeJob(BaseModel):
    """An account's data leaving our tables: the request (part 0: accounts.removed, or an erasure
    request from `argyle-synced purge`) and, for parts >= 1, where the previous part stopped."""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1)
    user: str | None = None
    request_id: str = Field(min_length=8)
    reason: Literal["accounts.removed", "erasure"] = "erasure"
    # When the removal was received: events of the account received before it never write again.
    removed_received_at_ms: int = Field(ge=0)
    part: int = Field(default=0, ge=0)
    stage: Literal["start", "activities", "archive", "user", "done"] = "start"
    deleted: dict[str, int] = Field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return hashlib.sha256(f"purge:{self.account}:{self.request_id}#part{self.part}".encode()).hexdigest()

    def body(self) -> bytes:
        doc = {"event": PURGE_EVENT, "data": self.model_dump()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class ParsedMessage:
    event: str
    data: EventData | Continuation | ResyncRequest | ChangeBatch | ReconcileJob | PurgeJob | None
    idempotency_key: str  # what makes two deliveries "the same event"
    # Set when a body already processed runs again (`dispatch.run_unless_covered`): its own key.
    rerun_key: str = ""

    @property
    def run_key(self) -> str:
        """The key this run is recorded under and its follow-up messages (continuations, change
        batches) are keyed from: a re-run's differ from the first run's, so they are not taken
        for that run's retries and dropped."""
        return self.rerun_key or self.idempotency_key

    @property
    def is_continuation(self) -> bool:
        """One of the sync's own follow-up messages, keyed by (origin, part) rather than by body."""
        return isinstance(self.data, Continuation | ChangeBatch | ReconcileJob | PurgeJob)


def parse_message(message: SyncMessage) -> ParsedMessage:
    """Raises MalformedWebhook (permanent: the message goes to the DLQ after its retries)."""
    event, data = parse_webhook(message.body)
    own = _OWN_MESSAGES.get(event)
    if own is not None:
        model, what = own
        try:
            job = model.model_validate(parse_json(message.body).get("data"))
        except (ValueError, AttributeError):
            # `from None`: pydantic's message quotes the input, and a traceback would print it.
            raise MalformedWebhook(f"{what} message is invalid") from None
        return ParsedMessage(event, job, job.idempotency_key)
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


_OwnMessage = type[Continuation] | type[ChangeBatch] | type[ReconcileJob] | type[PurgeJob]
_OWN_MESSAGES: dict[str, tuple[_OwnMessage, str]] = {
    CONTINUATION_EVENT: (Continuation, "continuation"),
    CHANGES_EVENT: (ChangeBatch, "changes"),
    RECONCILE_EVENT: (ReconcileJob, "reconcile"),
    PURGE_EVENT: (PurgeJob, "purge"),
}
