"""*_synced, added and re-syncs: list a range of the account's activities from Argyle and write
every page through the store's monotonic batch path.

A listing that would not finish in this invocation stops after a page and enqueues a continuation
(its own message, carrying the cursor) in the account's message group; see docs/sync.md.

Exact under change: v1 pages by offset, so an activity Argyle removes before the page being read
makes the next page skip a live one (and one it adds there makes a row repeat). Every page carries
Argyle's `count`; when it moves during the listing, or the rows listed do not add up to it, the
range is listed again, from its first page, before the account is recorded as synced. That pass
marks every activity it writes; if Argyle held still during it, the pass saw everything, and a
stored activity of the range it did not mark is checked with Argyle (404: removed). At most
MAX_LISTING_PASSES passes: an account that keeps changing is recorded anyway, counted
(`ListingsUnstable`), and left to its webhooks and the reconciler. See docs/sync.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argyle_pipeline.argyle.api_versions import rule_event
from argyle_pipeline.argyle.client import ArgyleUnavailable, PageLimitExceeded
from argyle_pipeline.argyle.webhook_events import ActivitiesAdded, ActivitiesFullySynced, ActivitiesPartiallySynced
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.context import SyncContext, iso_or_none
from argyle_pipeline.sync.listing_windows import (
    counts_shifted,
    list_windows,
    note_counts,
    origin_span,
    plan_windows,
    stored_span,
)
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
from argyle_pipeline.sync.page_prefetch import PagePrefetch
from argyle_pipeline.sync.ports import UNDATED_KEY
from argyle_pipeline.timestamps import parse_timestamp

ListingEvent = ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded
MAX_LISTING_PASSES = 3


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
        outcome = SyncOutcome(job.origin_event, part=job.part, listing_pass=int(job.origin.get("pass") or 1))
        marker = _marker(job)
        if not job.windows and not job.cursor and self._may_split(job):
            known = job.origin.get("available_count")
            plan = plan_windows(job.account, job.from_start_date, job.to_start_date,
                                known_count=int(known) if known is not None else None,
                                argyle=ctx.argyle, k=min(ctx.options.listing_windows, len(ctx.fetchers)),
                                threshold=ctx.options.window_threshold, list_counts=ctx.options.api.list_counts,
                                span_hint=lambda: origin_span(job.origin)
                                or stored_span(ctx.activities.stored_keys(job.account)))
            if plan is not None:
                job = job.model_copy(update={"windows": plan.windows})
                if plan.dated_count is not None:
                    job.origin["dated_count"] = plan.dated_count
        if job.windows:
            return self._run_windows(job, message, remaining_ms, outcome, marker)
        pages = ctx.argyle.list_activity_pages(job.account, job.from_start_date, job.to_start_date,
                                               cursor=dict(job.cursor) or None)
        resume_at: dict[str, str] = {}  # the cursor of the page after the last one written
        try:
            with PagePrefetch(pages) as prefetch:
                while True:
                    try:
                        page = prefetch.take()
                    except ArgyleUnavailable:
                        if outcome.pages == 0:
                            raise  # nothing done: the record fails and comes back with its own cursor
                        # Argyle gave out mid-listing: the rest goes on from this exact page, not page 1.
                        outcome.argyle_gave_out = True
                        return self._continue(job, resume_at, message, outcome)
                    if page is None:
                        break
                    outcome.pages += 1
                    note_counts(job.origin, page.count, len(page.activities))
                    # Always at least one page per part, so a short budget still makes progress.
                    stop_after = bool(page.next_cursor) and remaining_ms() < ctx.options.continuation_margin_ms
                    if page.next_cursor and not stop_after:
                        prefetch.start_next()  # page k+1 comes from Argyle while page k is written
                    outcome.add(ctx.activities.upsert_many(page.activities, ctx.now(), resync_marker=marker))
                    if page.next_cursor:
                        resume_at = page.next_cursor
                    if stop_after:
                        return self._continue(job, resume_at, message, outcome)
        except PageLimitExceeded as exc:
            # The client's page cap for one call: resume from where it stopped, in a new part.
            if exc.next_cursor:
                return self._continue(job, exc.next_cursor, message, outcome)
            raise
        return self._complete(job, message, outcome, marker, shifted=counts_shifted(job.origin))

    def _may_split(self, job: Continuation) -> bool:
        """Only a `*_synced` or re-sync listing is split into windows (`added` ranges are small)."""
        return job.origin_event == RESYNC_EVENT or rule_event(job.origin_event) in (FULLY_SYNCED, PARTIALLY_SYNCED)

    def _run_windows(self, job: Continuation, message: SyncMessage, remaining_ms: Callable[[], int],
                     outcome: SyncOutcome, marker: str | None) -> SyncOutcome:
        ctx = self.ctx
        run = list_windows(job.account, job.windows, clients=ctx.fetchers, store=ctx.activities, now=ctx.now,
                           marker=marker, on_written=lambda result, _rows: outcome.add(result),
                           out_of_time=lambda: remaining_ms() < ctx.options.continuation_margin_ms)
        outcome.pages += run.pages
        if not all(w.done for w in job.windows):
            if run.unavailable is not None and run.pages == 0:
                raise run.unavailable  # nothing done: the record fails and comes back with its own cursors
            outcome.argyle_gave_out = run.unavailable is not None
            return self._continue(job, {}, message, outcome)  # every unfinished window's own cursor
        dated = job.origin.get("dated_count")
        listed = sum(int(w.counts.get("first_count") or 0) for w in job.windows)
        # A window's count that moved, or windows that do not add up to Argyle's count of what they
        # cover (a change between the count and a window's first page): another pass.
        shifted = any(counts_shifted(w.counts) for w in job.windows) or (dated is not None and listed != dated)
        return self._complete(job, message, outcome, marker, shifted=shifted)

    def _complete(self, job: Continuation, message: SyncMessage, outcome: SyncOutcome, marker: str | None,
                  *, shifted: bool) -> SyncOutcome:
        """Every page of this pass is written: re-sync sweep, another pass, or record it."""
        if job.origin_event == RESYNC_EVENT and marker is not None:
            self._finish_resync(job, marker, outcome)
            outcome.completed = outcome.exact = True  # every stored activity was listed or checked
            return outcome
        if shifted:
            if outcome.listing_pass < MAX_LISTING_PASSES:
                return self._list_again(job, message, outcome)
            outcome.unstable = True  # recorded as synced anyway; webhooks and the reconciler follow
        elif marker is not None:  # a later pass that Argyle held still during: it saw everything
            self._sweep_range(job, marker, outcome)
        self.finish(job, message)
        outcome.completed = True
        outcome.covered_from, outcome.covered_to = job.from_start_date, job.to_start_date
        # Only a listing of the whole account that Argyle held still during proves the copy exact.
        outcome.exact = (rule_event(job.origin_event) == FULLY_SYNCED and not (job.from_start_date or job.to_start_date)
                         and not outcome.unstable)
        return outcome

    def _list_again(self, job: Continuation, message: SyncMessage, outcome: SyncOutcome) -> SyncOutcome:
        """Argyle changed under this pass: queue the next pass of the same range, from page one."""
        following = job.listing_pass_after()
        outcome.relisted = True
        return self._continue(following, {}, message, outcome)

    def _sweep_range(self, job: Continuation, marker: str, outcome: SyncOutcome) -> None:
        """Stored activities of the listed range that the (stable) pass did not mark: gone at Argyle,
        or written by another event between the pass's parts. One GET each tells which."""
        ctx = self.ctx
        unmarked = set(ctx.activities.live_ids_not_marked(job.account, marker))
        if job.from_start_date or job.to_start_date:
            low = parse_timestamp(job.from_start_date) if job.from_start_date else None
            high = parse_timestamp(job.to_start_date) if job.to_start_date else None
            in_range = {k.activity_id for k in ctx.activities.stored_keys(job.account)
                        if k.start_key != UNDATED_KEY
                        and (low is None or parse_timestamp(k.start_key) >= low)
                        and (high is None or parse_timestamp(k.start_key) <= high)}
            unmarked &= in_range
        gone: list[str] = []
        for activity_id, activity in ctx.fetch_current(sorted(unmarked)):
            if activity is None:
                gone.append(activity_id)
            else:
                outcome.fetched += 1
                outcome.add(ctx.activities.upsert_many([activity], ctx.now(), resync_marker=marker))
        if gone:
            outcome.removed += ctx.activities.remove(job.account, gone, ctx.now())

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

    def finish(self, job: Continuation, message: SyncMessage) -> None:
        """The listing is complete: record it."""
        ctx = self.ctx
        now, origin = ctx.now(), job.origin
        rule = rule_event(job.origin_event)  # gigs.fully_synced is recorded as activities.fully_synced is
        ctx.state.record_availability(
            job.account, job.user, available_from=origin.get("available_from"),
            available_to=origin.get("available_to"), available_count=origin.get("available_count"),
            event=job.origin_event, received_at_ms=message.received_at_ms, updated_at=now,
            unless_fully_synced=rule == PARTIALLY_SYNCED)
        if rule == FULLY_SYNCED:
            ctx.state.mark_fully_synced(job.account, job.user, now)
        elif rule == PARTIALLY_SYNCED:
            ctx.state.mark_partially_synced(job.account, job.user, origin.get("days_synced"), now)


def _marker(job: Continuation) -> str | None:
    """What each write of this listing is marked with: a re-sync's request id, or a later pass's."""
    if job.origin_event == RESYNC_EVENT:
        return str(job.origin["resync_marker"])
    return str(job.origin["pass_marker"]) if job.origin.get("pass_marker") else None
