"""The sync's entry point, without AWS: one queued message -> the rule that handles it.

The handler gives this module a message, the Argyle client and the stores; it never touches boto3.
Every event reads Argyle's current truth (a listing, or one GET per updated id), so processing an
event late, twice, or out of order still writes what Argyle holds now; the store's monotonic writes
and tombstones make sure that a copy read earlier can never replace one read later.

Where each event's rule lives: listings (*_synced, added, continuations, re-syncs) in
`listing.py`; updated and removed (and their later batches of ids) in `changes.py`; reconciles in
`reconcile.py`; accounts.removed, erasure requests and the purged-account gate in `purge.py`;
users.fully_synced and the accounts' connection status here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from argyle_pipeline.argyle.webhook_events import (
    AccountEvent,
    AccountsConnected,
    AccountsFailed,
    AccountsRemoved,
    AccountsUpdated,
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    UsersFullySynced,
)
from argyle_pipeline.sync.change_events import summarise
from argyle_pipeline.sync.changes import Changes
from argyle_pipeline.sync.context import SyncContext, SyncOptions
from argyle_pipeline.sync.listing import Listing
from argyle_pipeline.sync.messages import (
    ChangeBatch,
    Continuation,
    ParsedMessage,
    PurgeJob,
    ReconcileJob,
    ResyncRequest,
    SyncMessage,
)
from argyle_pipeline.sync.outcome import SyncOutcome
from argyle_pipeline.sync.ports import ActivitySource, ActivityWriter, ContinuationQueue, StateWriter
from argyle_pipeline.sync.purge import Purge
from argyle_pipeline.sync.reconcile import Reconciler


def needs_fresh_read(parsed: ParsedMessage, message: SyncMessage, previous: Mapping[str, Any]) -> bool:
    """Whether a body already processed (`previous` is its latest run's outcome) must be applied again.

    Argyle's bodies carry no event id or time, so the same bytes can announce a new change (the
    same activities updated again; an account connected again after its removal). A copy received
    before the latest run began reading Argyle announces nothing that run did not see: skip it. A
    copy received later may be news: apply it again (every event's rule reads Argyle's current
    truth or keeps the latest delivery, and the writes are monotonic). The sync's own follow-up
    messages are keyed by their part, never by body: a copy of one is only ever a retry.
    The receive time is the receiver's clock and the start the sync's; a wrong skip would need
    them apart by more than a read of Argyle plus Argyle's delivery (Lambda's clocks are synced).
    """
    if parsed.is_continuation:
        return False
    started = int(previous.get("started_at_ms") or 0)
    return message.received_at_ms >= started


def _quiet(parsed: ParsedMessage, message: SyncMessage) -> bool:
    """No change events for a replay or a re-sync (a backfill) unless it asked for them; a listing's
    later parts carry the choice in their origin."""
    data = parsed.data
    if isinstance(data, Continuation):
        return bool(data.origin.get("quiet"))
    if isinstance(data, ResyncRequest):
        return not data.publish_changes
    return bool(message.replay_id) and not message.publish_changes


def run_unless_covered(parsed: ParsedMessage, message: SyncMessage,
                       run: Callable[[ParsedMessage], dict[str, Any]]) -> dict[str, Any]:
    """`run(parsed)` (idempotent on `parsed.run_key`); while the answer is an earlier run's outcome
    (`duplicate`) that this copy may be newer than, run again under a key naming that run
    (`<key>@<its started_at_ms>`). So every copy of a body is covered by one run that began after
    it arrived: copies waiting in the queue together share one re-run (an Argyle retry costs at
    most one more run), and an SQS redelivery of a copy finds that run and stops. A re-run's
    outcome carries `runs_before`, the number of earlier runs of the same body."""
    outcome = run(parsed)
    runs_before = 0
    while outcome.get("duplicate") and needs_fresh_read(parsed, message, outcome):
        runs_before += 1
        rerun_key = f"{parsed.idempotency_key}@{int(outcome.get('started_at_ms') or 0)}"
        outcome = run(dataclasses.replace(parsed, rerun_key=rerun_key))
    if runs_before and not outcome.get("duplicate"):
        outcome = {**outcome, "runs_before": runs_before}
    return outcome


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
        self.purge = Purge(self.ctx)

    @property
    def argyle_retries(self) -> int:
        return self.ctx.argyle_retries

    def process(self, message: SyncMessage, parsed: ParsedMessage,
                remaining_ms: Callable[[], int]) -> SyncOutcome:
        """Apply one message. Raises on anything transient (Argyle unavailable, DynamoDB
        throttled) so that SQS retries it; the writes already made are safe to repeat."""
        started_at_ms = int(self.ctx.clock() * 1000)
        changes = self.ctx.activities.track_changes() if self.ctx.options.track_changes else None
        outcome = self._apply(message, parsed, remaining_ms)
        outcome.started_at_ms = started_at_ms
        outcome.message_id = message.message_id
        account = getattr(parsed.data, "account", None)
        if outcome.completed and isinstance(account, str) and account:
            # The account's health (sync/account_health.py): its last successful sync, "data as of".
            now = self.ctx.now()
            first_exact = self.ctx.state.record_sync(
                account, getattr(parsed.data, "user", None), now, event=outcome.event,
                covered_from=outcome.covered_from, covered_to=outcome.covered_to, exact=outcome.exact,
                counts=outcome.counts)
            outcome.data_as_of = now if outcome.exact else None
            # account.synced: exact *again*, i.e. its first exact copy, or after this message changed
            # something (a reconcile's repairs included); not when nothing moved (a duplicate).
            outcome.newly_exact = outcome.exact and (first_exact or bool(changes)
                                                     or any((outcome.drift or {}).values()))
        if changes is not None:
            outcome.changes = summarise(changes)
            outcome.quiet = _quiet(parsed, message)
        return outcome

    def _apply(self, message: SyncMessage, parsed: ParsedMessage,
               remaining_ms: Callable[[], int]) -> SyncOutcome:
        ctx, data = self.ctx, parsed.data
        if isinstance(data, PurgeJob):
            return self.purge.run(data, message, remaining_ms)
        account = getattr(data, "account", None)
        if isinstance(account, str) and account and not self.purge.gate(account, parsed.event, data, message,
                                                                         remaining_ms):
            # The account was purged: nothing of it is written again, not even the archive.
            return SyncOutcome(parsed.event, action="skipped_purged")
        if isinstance(data, AccountsRemoved):
            return self.purge.removed(data, message, parsed.run_key, remaining_ms)
        if isinstance(data, Continuation):
            return self.listing.run(data, message, remaining_ms)
        if isinstance(data, ChangeBatch):
            return self.changes.batch(data)
        if isinstance(data, ReconcileJob):
            return self.reconciler.run(data, message, remaining_ms)
        if isinstance(data, ResyncRequest):
            first = Listing.resync_part(data, parsed.run_key)
            first.origin["quiet"] = _quiet(parsed, message)  # its continuations keep the choice
            outcome = self.listing.run(first, message, remaining_ms)
        elif isinstance(data, ActivitiesFullySynced | ActivitiesPartiallySynced | ActivitiesAdded):
            first = self.listing.first_part(parsed.event, data, parsed.run_key)
            first.origin["quiet"] = _quiet(parsed, message)
            outcome = self.listing.run(first, message, remaining_ms)
        elif isinstance(data, ActivitiesUpdated):
            outcome = self.changes.updated(data, message, parsed.run_key)
        elif isinstance(data, ActivitiesRemoved):
            outcome = self.changes.removed(data, message, parsed.run_key)
        elif isinstance(data, UsersFullySynced):
            resource = data.original("resource")
            ctx.state.put_user(data.user, resource if isinstance(resource, dict) else {},
                               ctx.now(), message.received_at_ms)
            outcome = SyncOutcome(parsed.event)
        elif isinstance(data, AccountsUpdated | AccountsConnected | AccountsFailed):
            outcome = self._account_status(parsed.event, data, message)
        else:  # accounts.*, anything new: kept and counted, nothing to sync
            outcome = SyncOutcome(parsed.event, action="archived")
        outcome.archived = ctx.state.archive_event(
            parsed.idempotency_key, parsed.event, message.body, received_at_ms=message.received_at_ms,
            processed_at=ctx.now(), expires_at=int(ctx.clock()) + ctx.options.event_archive_seconds,
            group_id=message.group_id)
        return outcome

    def _account_status(self, event: str, data: AccountEvent, message: SyncMessage) -> SyncOutcome:
        """accounts.connected / .failed / .updated: the account's connection, as Argyle reports it."""
        status = error_code = scanned_at = None
        if isinstance(data, AccountsUpdated) and data.resource is not None:
            connection = data.resource.connection
            status = connection.status if connection else None
            error_code = connection.error_code if connection else None
            scanned_at = data.resource.scanned_at
        elif isinstance(data, AccountsConnected):
            status = "connected"
        elif isinstance(data, AccountsFailed):
            status = "failed"
        self.ctx.state.record_account_status(
            data.account, data.user, event=event, received_at_ms=message.received_at_ms, updated_at=self.ctx.now(),
            connection_status=status, error_code=error_code, scanned_at=scanned_at)
        outcome = SyncOutcome(event)
        outcome.connection_status = status
        return outcome
