"""The sync's entry point, without AWS: one queued message -> the rule that handles it.

The handler gives this module a message, the Argyle client and the stores; it never touches boto3.
Every event reads Argyle's current truth (a listing, or one GET per updated id), so processing an
event late, twice, or out of order still writes what Argyle holds now; the store's monotonic writes
and tombstones make sure that a copy read earlier can never replace one read later.

Where each event's rule lives: listings (*_synced, added, continuations, re-syncs) in
`listing.py`; updated and removed (and their later batches of ids) in `changes.py`; reconciles in
`reconcile.py`; users.fully_synced and the rest here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from argyle_pipeline.argyle.webhook_events import (
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    UsersFullySynced,
)
from argyle_pipeline.sync.changes import Changes
from argyle_pipeline.sync.context import SyncContext, SyncOptions
from argyle_pipeline.sync.listing import Listing
from argyle_pipeline.sync.messages import (
    REPEATABLE_EVENTS,
    ChangeBatch,
    Continuation,
    ParsedMessage,
    ReconcileJob,
    ResyncRequest,
    SyncMessage,
)
from argyle_pipeline.sync.outcome import SyncOutcome
from argyle_pipeline.sync.ports import ActivitySource, ActivityWriter, ContinuationQueue, StateWriter
from argyle_pipeline.sync.reconcile import Reconciler


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
        self.ctx = SyncContext(argyle, activities, state, continuations, options or SyncOptions(),
                               list(fetchers), clock)
        self.listing = Listing(self.ctx)
        self.changes = Changes(self.ctx)
        self.reconciler = Reconciler(self.ctx)

    @property
    def argyle_retries(self) -> int:
        return self.ctx.argyle_retries

    def process(self, message: SyncMessage, parsed: ParsedMessage,
                remaining_ms: Callable[[], int]) -> SyncOutcome:
        """Apply one message. Raises on anything transient (Argyle unavailable, DynamoDB
        throttled) so that SQS retries it; the writes already made are safe to repeat."""
        started_at_ms = int(self.ctx.clock() * 1000)
        outcome = self._apply(message, parsed, remaining_ms)
        outcome.started_at_ms = started_at_ms
        return outcome

    def _apply(self, message: SyncMessage, parsed: ParsedMessage,
               remaining_ms: Callable[[], int]) -> SyncOutcome:
        ctx, data = self.ctx, parsed.data
        if isinstance(data, Continuation):
            return self.listing.run(data, message, remaining_ms)
        if isinstance(data, ChangeBatch):
            return self.changes.batch(data)
        if isinstance(data, ReconcileJob):
            return self.reconciler.run(data, message, remaining_ms)
        if isinstance(data, ResyncRequest):
            outcome = self.listing.run(Listing.resync_part(data, parsed.idempotency_key), message, remaining_ms)
        elif isinstance(data, ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded):
            outcome = self.listing.run(self.listing.first_part(parsed.event, data, parsed.idempotency_key),
                                       message, remaining_ms)
        elif isinstance(data, ActivitiesUpdated):
            outcome = self.changes.updated(data, message, parsed.idempotency_key)
        elif isinstance(data, ActivitiesRemoved):
            outcome = self.changes.removed(data, message, parsed.idempotency_key)
        elif isinstance(data, UsersFullySynced):
            resource = data.original("resource")
            ctx.state.put_user(data.user, resource if isinstance(resource, dict) else {},
                               ctx.now(), message.received_at_ms)
            outcome = SyncOutcome(parsed.event)
        else:  # accounts.*, anything new: kept and counted, nothing to sync
            outcome = SyncOutcome(parsed.event, action="archived")
        outcome.archived = ctx.state.archive_event(
            parsed.idempotency_key, parsed.event, message.body, received_at_ms=message.received_at_ms,
            processed_at=ctx.now(), expires_at=int(ctx.clock()) + ctx.options.event_archive_seconds)
        return outcome
