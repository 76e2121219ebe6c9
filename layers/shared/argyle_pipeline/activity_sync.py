"""The sync's rules, without AWS: what each queued webhook means for the stored activities.

The handler gives this module a message, the Argyle client and the stores; it never touches boto3.
Every event reads Argyle's current truth (a listing, or one GET per updated id), so processing an
event late, twice, or out of order still writes what Argyle holds now; the store's monotonic writes
and tombstones make sure that a copy read earlier can never replace one read later.

A listing that would not finish in this invocation stops after a page and enqueues a continuation
(its own message, carrying the cursor) in the account's message group; see docs/sync.md.
"""

from __future__ import annotations

import hashlib
import json
import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from argyle_pipeline.activity import Activity, parse_json
from argyle_pipeline.activity_store import UpsertResult
from argyle_pipeline.argyle_client import ActivityNotFound, ActivityPage, PageLimitExceeded
from argyle_pipeline.event_queue import QueuedEvent, decode_body, dedupe_key
from argyle_pipeline.timestamps import iso_z
from argyle_pipeline.webhook_events import (
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    EventData,
    MalformedWebhook,
    UsersFullySynced,
    parse_webhook,
)

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
# Events whose body can repeat byte for byte for a new change at Argyle: activities.updated names
# the same ids, start-date range and counts when the same activities change again. See
# `needs_fresh_read`.
REPEATABLE_EVENTS = frozenset({UPDATED})


# --- what the logic needs of its collaborators ---------------------------------------------------

class ActivitySource(Protocol):
    """argyle_pipeline.argyle_client.ArgyleClient."""

    calls: int
    retries: int

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]: ...

    def get_activity(self, activity_id: str) -> Activity: ...


class ActivityWriter(Protocol):
    """argyle_pipeline.activity_store.ActivityStore."""

    def upsert_many(self, activities: Sequence[Activity], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult: ...

    def live_ids_not_marked(self, account_id: str, resync_marker: str) -> list[str]: ...

    def upsert_one(self, activity: Activity, synced_at: str) -> UpsertResult: ...

    def remove(self, account_id: str, activity_ids: Sequence[str], removed_at: str) -> int: ...


class StateWriter(Protocol):
    """argyle_pipeline.sync_state_store.SyncStateStore."""

    def mark_fully_synced(self, account_id: str, user_id: str | None, synced_at: str) -> None: ...

    def mark_partially_synced(self, account_id: str, user_id: str | None, days_synced: int | None,
                              synced_at: str) -> None: ...

    def record_availability(self, account_id: str, user_id: str | None, *, available_from: str | None,
                            available_to: str | None, available_count: int | None, event: str,
                            received_at_ms: int, updated_at: str,
                            unless_fully_synced: bool = False) -> bool: ...

    def mark_resynced(self, account_id: str, user_id: str | None, synced_at: str, *, removed: int) -> None: ...

    def put_user(self, user_id: str, resource: Mapping[str, Any], synced_at: str,
                 received_at_ms: int) -> bool: ...

    def archive_event(self, dedupe_key: str, event: str, body: bytes, *, received_at_ms: int,
                      processed_at: str, expires_at: int) -> bool: ...


class ContinuationQueue(Protocol):
    """argyle_pipeline.event_queue.EventQueue."""

    def send(self, event: QueuedEvent) -> str: ...


# --- messages ------------------------------------------------------------------------------------

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


# --- outcome -------------------------------------------------------------------------------------

@dataclass
class SyncOutcome:
    event: str
    action: str = "synced"  # synced | continued | archived (an event we only keep and count)
    part: int = 0
    pages: int = 0
    upserted: int = 0
    stale: int = 0  # not written: the stored copy is newer
    skipped_removed: int = 0  # not written: the activity was removed
    removed: int = 0  # tombstones written
    fetched: int = 0
    continuation_part: int | None = None
    archived: bool | None = None  # False: this body was archived (and counted) before
    started_at_ms: int = 0  # when processing began, i.e. before anything was read from Argyle

    def add(self, result: UpsertResult) -> None:
        self.upserted += result.written
        self.stale += result.stale
        self.skipped_removed += result.removed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SyncOptions:
    continuation_margin_ms: int = 120_000
    event_archive_seconds: int = 90 * 86_400
    # fully_synced lists the whole account rather than [available_from, available_to]: the same
    # activities, plus those without a start_date, which no date filter can match.
    full_sync_whole_account: bool = True


def needs_fresh_read(parsed: ParsedMessage, message: SyncMessage, previous: Mapping[str, Any]) -> bool:
    """Whether a body already processed (`previous` is that run's outcome) must be applied again.

    Argyle's bodies carry no event id or time, and an activities.updated for a second change of
    the same activities can be byte-identical to the first. A copy received before the earlier run
    started reading Argyle announces a change that read already saw: skip it. A copy received
    later may announce a newer change: read again (a few GETs; the writes are monotonic anyway).
    """
    if parsed.event not in REPEATABLE_EVENTS or parsed.is_continuation:
        return False
    started = int(previous.get("started_at_ms") or 0)
    return message.received_at_ms >= started


def _iso(value: datetime | None) -> str | None:
    return iso_z(value) if value is not None else None


def _utc_now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the sync ------------------------------------------------------------------------------------

class ActivitySync:
    def __init__(
        self,
        argyle: ActivitySource,
        activities: ActivityWriter,
        state: StateWriter,
        continuations: ContinuationQueue,
        options: SyncOptions | None = None,
        *,
        fetchers: Sequence[ActivitySource] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.argyle = argyle
        self.activities = activities
        self.state = state
        self.continuations = continuations
        self.options = options or SyncOptions()
        # activities.updated: each fetching thread borrows one of these clients (a client is not
        # shared between threads); none given means one at a time with `argyle`.
        self.fetchers = list(fetchers)
        self._clock = clock

    @property
    def argyle_retries(self) -> int:
        return sum(client.retries for client in {id(c): c for c in [self.argyle, *self.fetchers]}.values())

    def process(self, message: SyncMessage, parsed: ParsedMessage,
                remaining_ms: Callable[[], int]) -> SyncOutcome:
        """Apply one message. Raises on anything transient (Argyle unavailable, DynamoDB
        throttled) so that SQS retries it; the writes already made are safe to repeat."""
        started_at_ms = int(self._clock() * 1000)
        outcome = self._apply(message, parsed, remaining_ms)
        outcome.started_at_ms = started_at_ms
        return outcome

    def _apply(self, message: SyncMessage, parsed: ParsedMessage,
               remaining_ms: Callable[[], int]) -> SyncOutcome:
        data = parsed.data
        if isinstance(data, Continuation):
            return self._list(data, message, remaining_ms)
        if isinstance(data, ResyncRequest):
            job = Continuation.model_construct(
                origin_dedupe_key=parsed.idempotency_key, origin_event=RESYNC_EVENT, part=0, account=data.account,
                user=data.user, from_start_date=None, to_start_date=None, cursor={},
                origin={"resync_marker": data.request_id})
            outcome = self._list(job, message, remaining_ms)
        elif isinstance(data, ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded):
            outcome = self._list(self._first_part(parsed.event, data, parsed.idempotency_key),
                                 message, remaining_ms)
        elif isinstance(data, ActivitiesUpdated):
            outcome = self._updated(data, message)
        elif isinstance(data, ActivitiesRemoved):
            outcome = self._removed(data, message)
        elif isinstance(data, UsersFullySynced):
            resource = data.original("resource")
            self.state.put_user(data.user, resource if isinstance(resource, dict) else {},
                                self._now(), message.received_at_ms)
            outcome = SyncOutcome(parsed.event)
        else:  # accounts.*, anything new: kept and counted, nothing to sync
            outcome = SyncOutcome(parsed.event, action="archived")
        outcome.archived = self.state.archive_event(
            parsed.idempotency_key, parsed.event, message.body, received_at_ms=message.received_at_ms,
            processed_at=self._now(), expires_at=int(self._clock()) + self.options.event_archive_seconds)
        return outcome

    # --- listings (fully_synced, partially_synced, added, and their continuations) --------------

    def _first_part(self, event: str,
                    data: ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded,
                    origin_key: str) -> Continuation:
        start: str | None
        end: str | None
        if isinstance(data, ActivitiesAdded):
            start, end = _iso(data.added_from), _iso(data.added_to)
        elif isinstance(data, ActivitiesFullySynced) and self.options.full_sync_whole_account:
            start = end = None
        else:
            start, end = _iso(data.available_from), _iso(data.available_to)
        origin: dict[str, Any] = {"available_from": _iso(data.available_from),
                                  "available_to": _iso(data.available_to),
                                  "available_count": data.available_count}
        if isinstance(data, ActivitiesPartiallySynced):
            origin["days_synced"] = data.days_synced
        # Part 0 is never queued (the webhook itself is part 0); model_construct skips part >= 1.
        return Continuation.model_construct(origin_dedupe_key=origin_key, origin_event=event, part=0,
                                            account=data.account, user=data.user, from_start_date=start,
                                            to_start_date=end, cursor={}, origin=origin)

    def _list(self, job: Continuation, message: SyncMessage, remaining_ms: Callable[[], int]) -> SyncOutcome:
        outcome = SyncOutcome(job.origin_event, part=job.part)
        pages = self.argyle.list_activity_pages(job.account, job.from_start_date, job.to_start_date,
                                                cursor=dict(job.cursor) or None)
        try:
            for page in pages:
                outcome.pages += 1
                if job.origin_event == RESYNC_EVENT:
                    outcome.add(self.activities.upsert_many(page.activities, self._now(),
                                                            resync_marker=str(job.origin["resync_marker"])))
                else:
                    outcome.add(self.activities.upsert_many(page.activities, self._now()))
                # Always at least one page per part, so a short budget still makes progress.
                if page.next_cursor and remaining_ms() < self.options.continuation_margin_ms:
                    return self._continue(job, page.next_cursor, message, outcome)
        except PageLimitExceeded as exc:
            # The client's page cap for one call: resume from where it stopped, in a new part.
            if exc.next_cursor:
                return self._continue(job, exc.next_cursor, message, outcome)
            raise
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        if job.origin_event == RESYNC_EVENT:
            self._finish_resync(job, outcome)
        else:
            self._finish_listing(job, message)
        return outcome

    def _finish_resync(self, job: Continuation, outcome: SyncOutcome) -> None:
        """Every stored live activity the listing did not write is either gone at Argyle or was
        written by an event between this re-sync's parts: one GET each tells which."""
        marker = str(job.origin["resync_marker"])
        candidates = self.activities.live_ids_not_marked(job.account, marker)
        gone: list[str] = []
        for activity_id, activity in self._fetch_all(candidates):
            if activity is None:
                gone.append(activity_id)
            else:
                outcome.fetched += 1
                outcome.add(self.activities.upsert_many([activity], self._now(), resync_marker=marker))
        if gone:
            outcome.removed += self.activities.remove(job.account, gone, self._now())
        self.state.mark_resynced(job.account, job.user, self._now(), removed=len(gone))

    def _continue(self, job: Continuation, cursor: dict[str, str], message: SyncMessage,
                  outcome: SyncOutcome) -> SyncOutcome:
        following = Continuation.model_validate({**job.model_dump(), "part": job.part + 1, "cursor": cursor})
        self.continuations.send(QueuedEvent(
            body=following.body(),
            event_name=CONTINUATION_EVENT,
            group_id=message.group_id or f"account:{job.account}",
            dedupe_key=following.idempotency_key,
            correlation_id=message.correlation_id,
            received_at_ms=message.received_at_ms,
        ))
        outcome.action = "continued"
        outcome.continuation_part = following.part
        return outcome

    def _finish_listing(self, job: Continuation, message: SyncMessage) -> None:
        now, origin = self._now(), job.origin
        self.state.record_availability(
            job.account, job.user, available_from=origin.get("available_from"),
            available_to=origin.get("available_to"), available_count=origin.get("available_count"),
            event=job.origin_event, received_at_ms=message.received_at_ms, updated_at=now,
            unless_fully_synced=job.origin_event == PARTIALLY_SYNCED)
        if job.origin_event == FULLY_SYNCED:
            self.state.mark_fully_synced(job.account, job.user, now)
        elif job.origin_event == PARTIALLY_SYNCED:
            self.state.mark_partially_synced(job.account, job.user, origin.get("days_synced"), now)

    # --- updated and removed -------------------------------------------------------------------

    def _updated(self, data: ActivitiesUpdated, message: SyncMessage) -> SyncOutcome:
        outcome = SyncOutcome(UPDATED)
        ids = list(dict.fromkeys(data.updated_activities))
        gone: list[str] = []
        for activity_id, activity in self._fetch_all(ids):
            if activity is None:
                gone.append(activity_id)
                continue
            outcome.fetched += 1
            outcome.add(self.activities.upsert_one(activity, self._now()))
        if gone:  # updated, then removed at Argyle before we asked: it is a removal
            outcome.removed += self.activities.remove(data.account, gone, self._now())
        self._record_availability(UPDATED, data, message)
        return outcome

    def _fetch_all(self, ids: list[str]) -> list[tuple[str, Activity | None]]:
        def fetch_with(client: ActivitySource, activity_id: str) -> tuple[str, Activity | None]:
            try:
                return activity_id, client.get_activity(activity_id)
            except ActivityNotFound:
                return activity_id, None

        if len(self.fetchers) <= 1 or len(ids) <= 1:
            client = self.fetchers[0] if self.fetchers else self.argyle
            return [fetch_with(client, activity_id) for activity_id in ids]

        free: queue.SimpleQueue[ActivitySource] = queue.SimpleQueue()
        for client in self.fetchers:
            free.put(client)

        def fetch(activity_id: str) -> tuple[str, Activity | None]:
            client = free.get()
            try:
                return fetch_with(client, activity_id)
            finally:
                free.put(client)

        pool = ThreadPoolExecutor(max_workers=len(self.fetchers), thread_name_prefix="argyle-fetch")
        try:
            return list(pool.map(fetch, ids))
        finally:
            # On the first error, fetches not yet started are dropped; the message is retried.
            pool.shutdown(wait=True, cancel_futures=True)

    def _removed(self, data: ActivitiesRemoved, message: SyncMessage) -> SyncOutcome:
        outcome = SyncOutcome(REMOVED)
        outcome.removed = self.activities.remove(data.account, data.removed_activities, self._now())
        self._record_availability(REMOVED, data, message)
        return outcome

    def _record_availability(self, event: str, data: ActivitiesUpdated | ActivitiesRemoved,
                             message: SyncMessage) -> None:
        self.state.record_availability(
            data.account, data.user, available_from=_iso(data.available_from),
            available_to=_iso(data.available_to), available_count=data.available_count, event=event,
            received_at_ms=message.received_at_ms, updated_at=self._now())

    def _now(self) -> str:
        return _utc_now_iso(self._clock)
