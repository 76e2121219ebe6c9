"""What processing one message did: the figures the handler logs and turns into metrics, and the
record the idempotency table keeps for a redelivery."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from argyle_pipeline.sync.ports import UpsertResult


@dataclass
class SyncOutcome:
    event: str
    action: str = "synced"  # synced | continued | archived (an event we only keep and count) | archived_other_version
    part: int = 0
    pages: int = 0
    upserted: int = 0
    stale: int = 0  # not written: the stored copy is newer
    skipped_removed: int = 0  # not written: the activity was removed
    removed: int = 0  # tombstones written
    fetched: int = 0
    continuation_part: int | None = None
    # activities.removed ids that Argyle still has (written as its current copy, not removed)
    contradicted: int = 0
    # A finished reconcile: drift found and repaired, by kind (missing, extra, stale); None when
    # this message was no reconcile's last part.
    drift: dict[str, int] | None = None
    listing_pass: int = 0  # a listing's pass (2+: listed again because Argyle changed under it)
    # Argyle stayed unavailable mid-listing: the rest was handed on from the last written page's cursor
    argyle_gave_out: bool = False
    relisted: bool = False  # Argyle changed under this pass: the next pass is queued
    unstable: bool = False  # still changing after MAX_LISTING_PASSES: recorded, left to the reconciler
    changes_parts: int = 0  # ChangeBatch messages queued for the ids beyond this part
    purged: dict[str, int] | None = None  # a finished purge: what was deleted, by kind
    purge_queued: bool = False  # a reconcile found the account gone at Argyle: its purge is queued
    connection_status: str | None = None  # accounts.*: the connection status Argyle reported
    archived: bool | None = None  # False: this body was archived (and counted) before
    started_at_ms: int = 0  # when processing began, i.e. before anything was read from Argyle
    message_id: str = ""  # the SQS message processed: a redelivery of it publishes its change events again
    # Health (sync/account_health.py): the event's work is complete (its last part); the range a
    # listing covered (None: the whole account); the stored copy was found equal to Argyle; and the
    # counts a reconcile compared (stored_live, argyle_count).
    completed: bool = False
    covered_from: str | None = None
    covered_to: str | None = None
    exact: bool = False
    counts: dict[str, int] | None = None
    data_as_of: str | None = None  # the time recorded as the account's data_as_of (exact)
    newly_exact: bool = False  # exact again after a change (or for the first time): account.synced
    # Change events (sync/change_events.py): the net ids this message changed, when they are on;
    # `quiet`: a replay or re-sync that was not asked to publish.
    changes: dict[str, Any] | None = None
    quiet: bool = False

    def add(self, result: UpsertResult) -> None:
        self.upserted += result.written
        self.stale += result.stale
        self.skipped_removed += result.removed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
