"""Which accounts the scheduled reconciler asks to reconcile, and how (no AWS here).

Every run queues one ReconcileJob per known account, in the account's message group, so a
reconcile never races the account's webhooks. Most runs are "recent" (re-list the last days, then
compare counts); each account gets a "full" pass once every `full_every_days`, on a day of its own
(a hash of its id), so the week's full passes spread evenly instead of landing on one night.
Without Argyle's list counts (API v2 documents none) there is nothing cheaper to compare: every
reconcile is "full" (a "recent" one would end in a full pass anyway, after a wasted re-list).
The request id is the schedule's period: a second run in the same period (a retry, a manual
invoke) queues the same messages, which SQS (5 minutes) and the idempotency table drop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.messages import RECONCILE_EVENT, ReconcileJob


@dataclass(frozen=True)
class ReconcileSchedule:
    interval_seconds: int = 86_400
    full_every_days: int = 7
    # False when the API's lists carry no `count` (ApiVersion.list_counts): every run is full.
    counts: bool = True

    def period(self, now: float) -> int:
        return int(now // self.interval_seconds)

    def scope(self, account: str, period: int) -> Literal["full", "recent"]:
        if not self.counts:
            return "full"
        periods_per_full = max(1, self.full_every_days * 86_400 // self.interval_seconds)
        offset = int(hashlib.sha256(account.encode()).hexdigest()[:8], 16) % periods_per_full
        return "full" if (period + offset) % periods_per_full == 0 else "recent"

    def requests(self, accounts: Iterable[str], now: float, *, request_id: str | None = None,
                 scope: Literal["full", "recent"] | None = None) -> Iterator[ReconcileJob]:
        """One job per account. `request_id` / `scope` replace the period's (an on-demand run)."""
        period = self.period(now)
        for account in accounts:
            yield ReconcileJob(account=account, request_id=request_id or f"scheduled-{period}",
                               scope=scope or self.scope(account, period))


def reconcile_message(job: ReconcileJob, correlation_id: str, received_at_ms: int) -> QueuedEvent:
    """The queue message of a reconcile request (the scheduler's, or `argyle-synced reconcile`)."""
    return QueuedEvent(body=job.body(), event_name=RECONCILE_EVENT, group_id=f"account:{job.account}",
                       dedupe_key=job.idempotency_key, correlation_id=correlation_id,
                       received_at_ms=received_at_ms)
