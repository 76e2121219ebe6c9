"""A worker's data leaves when the worker leaves: what a purge deletes, and what keeps it final.

`accounts.removed` (the worker revoked access; Argyle deletes the account's data and sends no
activities.removed) and `argyle-synced purge` (an erasure request) both run a PurgeJob in the
account's message group:

1. start: the account's state becomes a marker ("purging"); from then on every message of the
   account is skipped (`gate`), and it leaves the reconcile schedule's index.
2. activities: every stored item of the account, live copies and tombstones, 1,000 a step.
3. archive: every archived webhook body of the account (found by the Lookups index).
4. user: the user's link to the account; when the user has no account left, the user's profile
   and archived user webhooks too.
5. the marker becomes final: account id, times, counts deleted. No personal data.

Steps resume in a new message when time runs short, like a listing. A purge is final: an event
of the account (a late webhook, a continuation, a replay, a reconcile) writes nothing. Only Argyle
reporting the account connected again starts it afresh: a fully_synced, partially_synced or
accounts.connected received after the removal, *and* Argyle answering for the account again (a
late copy of an old event, delivered out of order, is not a reconnection).

accounts.removed is a claim like any webhook: Argyle must answer 404 for the account before
anything is deleted. While Argyle still has it, the message fails and is retried (a forged
removal ends in the DLQ, visible, with nothing deleted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argyle_pipeline.argyle.api_versions import rule_event
from argyle_pipeline.argyle.client import AccountNotFound
from argyle_pipeline.argyle.webhook_events import AccountsRemoved, EventData
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.context import SyncContext
from argyle_pipeline.sync.messages import (
    ACCOUNTS_REMOVED,
    PURGE_EVENT,
    RESTART_EVENTS,
    PurgeJob,
    SyncMessage,
)
from argyle_pipeline.sync.outcome import SyncOutcome

ACTIVITIES_PER_STEP = 1_000
ARCHIVE_PER_STEP = 500


class AccountStillConnected(Exception):
    """accounts.removed, but Argyle still answers for the account: not purged; retried later."""


class Purge:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    # --- the gate every message of an account passes -----------------------------------------------

    def gate(self, account: str, event: str, data: Any, message: SyncMessage,
             remaining_ms: Callable[[], int]) -> bool:
        """True when the message may proceed; False when it belongs to a purged account and must
        write nothing. A restart event received after the removal clears the marker first."""
        marker = self.ctx.state.purge_marker(account)
        if marker is None:
            return True
        if event == ACCOUNTS_REMOVED and marker.get("status") == "purging":
            return True  # a purge that failed part-way, retried: it resumes (its steps are idempotent)
        removed_at = int(marker.get("removed_received_at_ms") or 0)
        restart = (rule_event(event) in RESTART_EVENTS and isinstance(data, EventData)
                   and message.received_at_ms > removed_at)
        if not restart or not self._connected_at_argyle(account):
            return False
        if marker.get("status") != "purged":
            # Still purging (its next part is queued behind this message): finish it here first.
            self._finish_inline(account, removed_at, str(marker.get("purge_reason") or "erasure"))
        self.ctx.state.forget_purge(account)
        return True

    def _connected_at_argyle(self, account: str) -> bool:
        """A restart event may be an old one delivered late: only Argyle answering for the account
        says it was really connected again."""
        try:
            self.ctx.argyle.get_account(account)
        except AccountNotFound:
            return False
        return True

    def _finish_inline(self, account: str, removed_at: int, reason: str) -> None:
        job = PurgeJob(account=account, request_id=f"inline-{removed_at}", removed_received_at_ms=removed_at,
                       reason=reason if reason == ACCOUNTS_REMOVED else "erasure", stage="activities")
        while job.stage != "done":
            self._step(job, SyncOutcome(PURGE_EVENT))

    # --- accounts.removed and PurgeJob -------------------------------------------------------------

    def removed(self, data: AccountsRemoved, message: SyncMessage, origin_key: str,
                remaining_ms: Callable[[], int]) -> SyncOutcome:
        try:
            self.ctx.argyle.get_account(data.account)
        except AccountNotFound:
            job = PurgeJob(account=data.account, user=data.user, request_id=origin_key, reason=ACCOUNTS_REMOVED,
                           removed_received_at_ms=message.received_at_ms)
            outcome = self.run(job, message, remaining_ms)
            outcome.event = ACCOUNTS_REMOVED
            return outcome
        raise AccountStillConnected(
            "accounts.removed, but Argyle still has the account: nothing deleted; retried until Argyle "
            "confirms (a forged removal ends in the DLQ)")

    def run(self, job: PurgeJob, message: SyncMessage, remaining_ms: Callable[[], int]) -> SyncOutcome:
        outcome = SyncOutcome(PURGE_EVENT, part=job.part)
        if job.part and not self._still_ours(job):
            outcome.action = "skipped"  # the account was connected again meanwhile: nothing to delete
            return outcome
        stepped = False  # each message makes one step at least, however little time is left
        while job.stage != "done":
            if stepped and remaining_ms() < self.ctx.options.continuation_margin_ms:
                return self._continue(job, message, outcome)
            stepped = True
            self._step(job, outcome)
        outcome.action = "purged"
        outcome.purged = dict(job.deleted)
        return outcome

    def _still_ours(self, job: PurgeJob) -> bool:
        marker = self.ctx.state.purge_marker(job.account)
        return marker is not None and int(marker.get("removed_received_at_ms") or 0) == job.removed_received_at_ms

    def _step(self, job: PurgeJob, outcome: SyncOutcome) -> None:
        ctx, deleted = self.ctx, job.deleted
        if job.stage == "start":
            ctx.state.begin_purge(job.account, removed_received_at_ms=job.removed_received_at_ms,
                                  reason=job.reason, at=ctx.now())
            job.stage = "activities"
        elif job.stage == "activities":
            ids = ctx.activities.item_ids(job.account, ACTIVITIES_PER_STEP)
            if ids:
                deleted["activities"] = deleted.get("activities", 0) + ctx.activities.delete_many(job.account, ids)
            else:
                job.stage = "archive"
        elif job.stage == "archive":
            keys = ctx.state.archived_keys(f"account:{job.account}", ARCHIVE_PER_STEP)
            if keys:
                deleted["archived_events"] = deleted.get("archived_events", 0) + ctx.state.delete_keys(keys)
            elif counters := ctx.state.counter_keys(f"account:{job.account}", ARCHIVE_PER_STEP):
                ctx.state.delete_keys(counters)  # the group's event counts: ids of the account, nothing more
            else:
                job.stage = "user"
        elif job.stage == "user":
            if job.user:
                self._user(job)
            ctx.state.finish_purge(job.account, removed_received_at_ms=job.removed_received_at_ms,
                                   reason=job.reason, purged_at=ctx.now(), deleted=deleted)
            job.stage = "done"

    def _user(self, job: PurgeJob) -> None:
        """The user's profile goes with the user's last account."""
        state, user = self.ctx.state, str(job.user)
        state.unlink_user(user, job.account)
        if state.user_accounts(user):
            return
        while keys := state.archived_keys(f"user:{user}", ARCHIVE_PER_STEP):
            job.deleted["archived_events"] = job.deleted.get("archived_events", 0) + state.delete_keys(keys)
        while counters := state.counter_keys(f"user:{user}", ARCHIVE_PER_STEP):
            state.delete_keys(counters)
        state.delete_user(user)
        job.deleted["user_profiles"] = 1

    def _continue(self, job: PurgeJob, message: SyncMessage, outcome: SyncOutcome) -> SyncOutcome:
        following = job.model_copy(update={"part": job.part + 1})
        self.ctx.continuations.send(QueuedEvent(
            body=following.body(), event_name=PURGE_EVENT, group_id=message.group_id or f"account:{job.account}",
            dedupe_key=following.idempotency_key, correlation_id=message.correlation_id,
            received_at_ms=message.received_at_ms))
        outcome.action = "continued"
        outcome.continuation_part = following.part
        return outcome
