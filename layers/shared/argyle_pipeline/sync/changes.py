"""activities.updated and activities.removed: the webhook names ids; Argyle says what they are now.

Both events take the same path: each named id is read with GET /activities/{id} (a few at a time).
A 200 is written as Argyle's current copy (conditional, monotonic); a 404 becomes a tombstone. So
a signed `activities.removed` naming live activities removes nothing: Argyle contradicts it, the
activities are kept, and the contradiction is counted (`RemovalsContradicted`, a security signal:
a leaked webhook secret or a mistaken event). See docs/sync.md, "Confirmed removals".

One invocation checks at most `changes_per_part` ids; the rest go, all at once, into ChangeBatch
messages of the account's message group, keyed by (origin, part) like a listing's continuations.
"""

from __future__ import annotations

from argyle_pipeline.argyle.webhook_events import ActivitiesRemoved, ActivitiesUpdated
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.context import SyncContext, iso_or_none
from argyle_pipeline.sync.messages import CHANGES_EVENT, REMOVED, UPDATED, ChangeBatch, SyncMessage
from argyle_pipeline.sync.outcome import SyncOutcome


class Changes:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def updated(self, data: ActivitiesUpdated, message: SyncMessage, origin_key: str) -> SyncOutcome:
        outcome = self._first_part(UPDATED, data.account, data.user, data.updated_activities, message, origin_key)
        self._record_availability(UPDATED, data, message)
        return outcome

    def removed(self, data: ActivitiesRemoved, message: SyncMessage, origin_key: str) -> SyncOutcome:
        outcome = self._first_part(REMOVED, data.account, data.user, data.removed_activities, message, origin_key)
        self._record_availability(REMOVED, data, message)
        return outcome

    def batch(self, job: ChangeBatch) -> SyncOutcome:
        outcome = SyncOutcome(job.origin_event, part=job.part)
        self._check(job.origin_event, job.account, job.ids, outcome)
        outcome.completed = True  # this part's ids: each part is its own piece of the event's work
        return outcome

    def _first_part(self, event: str, account: str, user: str | None, named: list[str], message: SyncMessage,
                    origin_key: str) -> SyncOutcome:
        ids = list(dict.fromkeys(i for i in named if i))
        per_part = self.ctx.options.changes_per_part
        outcome = SyncOutcome(event)
        # The rest first: if this part fails after queueing them, its retry queues the very same
        # messages (same bodies, same dedupe ids), which SQS and the idempotency table drop.
        for part, start in enumerate(range(per_part, len(ids), per_part), start=1):
            batch = ChangeBatch(origin_dedupe_key=origin_key, origin_event=event, part=part, account=account,
                                user=user, ids=ids[start:start + per_part])
            self.ctx.continuations.send(QueuedEvent(
                body=batch.body(), event_name=CHANGES_EVENT, group_id=message.group_id or f"account:{account}",
                dedupe_key=batch.idempotency_key, correlation_id=message.correlation_id,
                received_at_ms=message.received_at_ms))
            outcome.changes_parts += 1
        self._check(event, account, ids[:per_part], outcome)
        outcome.completed = True  # this part's ids: each part is its own piece of the event's work
        return outcome

    def _check(self, event: str, account: str, ids: list[str], outcome: SyncOutcome) -> None:
        ctx = self.ctx
        gone: list[str] = []
        for activity_id, activity in ctx.fetch_current(ids):
            if activity is None:
                gone.append(activity_id)
                continue
            outcome.fetched += 1
            outcome.add(ctx.activities.upsert_one(activity, ctx.now()))
            if event == REMOVED:
                outcome.contradicted += 1
        # updated, then removed at Argyle before we asked: it is a removal too
        if gone:
            outcome.removed += ctx.activities.remove(account, gone, ctx.now())

    def _record_availability(self, event: str, data: ActivitiesUpdated | ActivitiesRemoved,
                             message: SyncMessage) -> None:
        self.ctx.state.record_availability(
            data.account, data.user, available_from=iso_or_none(data.available_from),
            available_to=iso_or_none(data.available_to), available_count=data.available_count, event=event,
            received_at_ms=message.received_at_ms, updated_at=self.ctx.now())
