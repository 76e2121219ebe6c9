"""activities.updated and activities.removed: read Argyle's current copy of the named ids and write
that, through the store's conditional single-item path (updates) or as tombstones (removals)."""

from __future__ import annotations

from argyle_pipeline.argyle.webhook_events import ActivitiesRemoved, ActivitiesUpdated
from argyle_pipeline.sync.context import SyncContext, iso_or_none
from argyle_pipeline.sync.messages import REMOVED, UPDATED, SyncMessage
from argyle_pipeline.sync.outcome import SyncOutcome


class Changes:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def updated(self, data: ActivitiesUpdated, message: SyncMessage) -> SyncOutcome:
        ctx = self.ctx
        outcome = SyncOutcome(UPDATED)
        ids = list(dict.fromkeys(data.updated_activities))
        gone: list[str] = []
        for activity_id, activity in ctx.fetch_current(ids):
            if activity is None:
                gone.append(activity_id)
                continue
            outcome.fetched += 1
            outcome.add(ctx.activities.upsert_one(activity, ctx.now()))
        if gone:  # updated, then removed at Argyle before we asked: it is a removal
            outcome.removed += ctx.activities.remove(data.account, gone, ctx.now())
        self._record_availability(UPDATED, data, message)
        return outcome

    def removed(self, data: ActivitiesRemoved, message: SyncMessage) -> SyncOutcome:
        outcome = SyncOutcome(REMOVED)
        outcome.removed = self.ctx.activities.remove(data.account, data.removed_activities, self.ctx.now())
        self._record_availability(REMOVED, data, message)
        return outcome

    def _record_availability(self, event: str, data: ActivitiesUpdated | ActivitiesRemoved,
                             message: SyncMessage) -> None:
        self.ctx.state.record_availability(
            data.account, data.user, available_from=iso_or_none(data.available_from),
            available_to=iso_or_none(data.available_to), available_count=data.available_count, event=event,
            received_at_ms=message.received_at_ms, updated_at=self.ctx.now())
