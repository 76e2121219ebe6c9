"""*_synced, added and re-syncs: list a range of the account's activities from Argyle and write
every page through the store's monotonic batch path.

A listing that would not finish in this invocation stops after a page and enqueues a continuation
(its own message, carrying the cursor) in the account's message group; see docs/sync.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argyle_pipeline.argyle.client import PageLimitExceeded
from argyle_pipeline.argyle.webhook_events import ActivitiesAdded, ActivitiesFullySynced, ActivitiesPartiallySynced
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.context import SyncContext, iso_or_none
from argyle_pipeline.sync.messages import (
    CONTINUATION_EVENT,
    FULLY_SYNCED,
    PARTIALLY_SYNCED,
    RESYNC_EVENT,
    Continuation,
    ResyncRequest,
    SyncMessage,
)
from argyle_pipeline.sync.outcome import SyncOutcome

ListingEvent = ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded


class Listing:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def first_part(self, event: str, data: ListingEvent, origin_key: str) -> Continuation:
        """The webhook as part 0 of its listing: the range to list and what the last part records."""
        start: str | None
        end: str | None
        if isinstance(data, ActivitiesAdded):
            start, end = iso_or_none(data.added_from), iso_or_none(data.added_to)
        elif isinstance(data, ActivitiesFullySynced) and self.ctx.options.full_sync_whole_account:
            start = end = None
        else:
            start, end = iso_or_none(data.available_from), iso_or_none(data.available_to)
        origin: dict[str, Any] = {"available_from": iso_or_none(data.available_from),
                                  "available_to": iso_or_none(data.available_to),
                                  "available_count": data.available_count}
        if isinstance(data, ActivitiesPartiallySynced):
            origin["days_synced"] = data.days_synced
        # Part 0 is never queued (the webhook itself is part 0); model_construct skips part >= 1.
        return Continuation.model_construct(origin_dedupe_key=origin_key, origin_event=event, part=0,
                                            account=data.account, user=data.user, from_start_date=start,
                                            to_start_date=end, cursor={}, origin=origin)

    @staticmethod
    def resync_part(request: ResyncRequest, origin_key: str) -> Continuation:
        return Continuation.model_construct(
            origin_dedupe_key=origin_key, origin_event=RESYNC_EVENT, part=0, account=request.account,
            user=request.user, from_start_date=None, to_start_date=None, cursor={},
            origin={"resync_marker": request.request_id})

    def run(self, job: Continuation, message: SyncMessage, remaining_ms: Callable[[], int]) -> SyncOutcome:
        ctx = self.ctx
        outcome = SyncOutcome(job.origin_event, part=job.part)
        marker = str(job.origin["resync_marker"]) if job.origin_event == RESYNC_EVENT else None
        pages = ctx.argyle.list_activity_pages(job.account, job.from_start_date, job.to_start_date,
                                               cursor=dict(job.cursor) or None)
        try:
            for page in pages:
                outcome.pages += 1
                outcome.add(ctx.activities.upsert_many(page.activities, ctx.now(), resync_marker=marker))
                # Always at least one page per part, so a short budget still makes progress.
                if page.next_cursor and remaining_ms() < ctx.options.continuation_margin_ms:
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
        if marker is not None:
            self._finish_resync(job, marker, outcome)
        else:
            self._finish_listing(job, message)
        return outcome

    def _continue(self, job: Continuation, cursor: dict[str, str], message: SyncMessage,
                  outcome: SyncOutcome) -> SyncOutcome:
        following = Continuation.model_validate({**job.model_dump(), "part": job.part + 1, "cursor": cursor})
        self.ctx.continuations.send(QueuedEvent(
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

    def _finish_resync(self, job: Continuation, marker: str, outcome: SyncOutcome) -> None:
        """Every stored live activity the listing did not write is either gone at Argyle or was
        written by an event between this re-sync's parts: one GET each tells which."""
        ctx = self.ctx
        candidates = ctx.activities.live_ids_not_marked(job.account, marker)
        gone: list[str] = []
        for activity_id, activity in ctx.fetch_current(candidates):
            if activity is None:
                gone.append(activity_id)
            else:
                outcome.fetched += 1
                outcome.add(ctx.activities.upsert_many([activity], ctx.now(), resync_marker=marker))
        if gone:
            outcome.removed += ctx.activities.remove(job.account, gone, ctx.now())
        ctx.state.mark_resynced(job.account, job.user, ctx.now(), removed=len(gone))

    def _finish_listing(self, job: Continuation, message: SyncMessage) -> None:
        ctx = self.ctx
        now, origin = ctx.now(), job.origin
        ctx.state.record_availability(
            job.account, job.user, available_from=origin.get("available_from"),
            available_to=origin.get("available_to"), available_count=origin.get("available_count"),
            event=job.origin_event, received_at_ms=message.received_at_ms, updated_at=now,
            unless_fully_synced=job.origin_event == PARTIALLY_SYNCED)
        if job.origin_event == FULLY_SYNCED:
            ctx.state.mark_fully_synced(job.account, job.user, now)
        elif job.origin_event == PARTIALLY_SYNCED:
            ctx.state.mark_partially_synced(job.account, job.user, origin.get("days_synced"), now)
