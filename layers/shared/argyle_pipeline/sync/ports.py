"""What the sync's rules need of their collaborators. The AWS adapters (argyle_pipeline.aws) and the
Argyle client implement these; the tests' in-memory fakes do too."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.argyle.client import ActivityPage
from argyle_pipeline.aws.event_queue import QueuedEvent


@dataclass
class UpsertResult:
    written: int = 0
    stale: int = 0  # skipped: the stored copy is newer
    removed: int = 0  # skipped: the activity was removed (tombstone)
    # Of `written`: how many had no live stored copy (created) or an older one (changed). A
    # listing that creates or changes anything found the copy behind Argyle: drift, to a reconcile.
    created: int = 0
    changed: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.written += other.written
        self.stale += other.stale
        self.removed += other.removed
        self.created += other.created
        self.changed += other.changed
        return self


@dataclass
class ChangeSet:
    """The activity ids whose stored copy really changed while one message was processed: created
    (no live copy before), updated (an older copy before), removed (a live copy became a tombstone).
    A write that changed nothing (a duplicate, a re-listing of the same data) is in none of them."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


# The `start_key` of an activity without a start_date: sorts after every dated key.
UNDATED_KEY = "~"


@dataclass(frozen=True)
class StoredKey:
    """One live stored activity, as the reconciler compares it with Argyle: its normalised start
    instant (`start_key`, UNDATED_KEY when it has none) and id."""

    start_key: str
    activity_id: str


class ActivitySource(Protocol):
    """argyle_pipeline.argyle.client.ArgyleClient."""

    calls: int
    retries: int

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]: ...

    def get_activity(self, activity_id: str) -> Activity: ...

    def count_activities(self, account: str, from_start_date: str | None = None,
                         to_start_date: str | None = None) -> int | None: ...

    def get_account(self, account_id: str) -> dict[str, Any]: ...


class ActivityWriter(Protocol):
    """argyle_pipeline.aws.activity_store.ActivityStore."""

    def upsert_many(self, activities: Sequence[Activity], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult: ...

    def live_ids_not_marked(self, account_id: str, resync_marker: str) -> list[str]: ...

    def stored_keys(self, account_id: str) -> list[StoredKey]: ...

    def upsert_one(self, activity: Activity, synced_at: str) -> UpsertResult: ...

    def remove(self, account_id: str, activity_ids: Sequence[str], removed_at: str) -> int: ...

    def item_ids(self, account_id: str, limit: int = 1_000) -> list[str]: ...

    def delete_many(self, account_id: str, activity_ids: Sequence[str]) -> int: ...

    def track_changes(self) -> ChangeSet:
        """From now on, record every real change in a new ChangeSet (returned); removals then read
        the stored copies first, to tell a live activity's removal from a repeated one."""
        ...


class StateWriter(Protocol):
    """argyle_pipeline.aws.sync_state_store.SyncStateStore."""

    def mark_fully_synced(self, account_id: str, user_id: str | None, synced_at: str) -> None: ...

    def mark_partially_synced(self, account_id: str, user_id: str | None, days_synced: int | None,
                              synced_at: str) -> None: ...

    def record_availability(self, account_id: str, user_id: str | None, *, available_from: str | None,
                            available_to: str | None, available_count: int | None, event: str,
                            received_at_ms: int, updated_at: str,
                            unless_fully_synced: bool = False) -> bool: ...

    def mark_resynced(self, account_id: str, user_id: str | None, synced_at: str, *, removed: int) -> None: ...

    def record_sync(self, account_id: str, user_id: str | None, synced_at: str, *, event: str,
                    covered_from: str | None, covered_to: str | None, exact: bool,
                    counts: Mapping[str, int] | None = None) -> bool: ...

    def record_reconcile(self, account_id: str, user_id: str | None, reconciled_at: str, *, scope: str,
                         drift: Mapping[str, int], argyle_calls: int) -> None: ...

    def put_user(self, user_id: str, resource: Mapping[str, Any], synced_at: str,
                 received_at_ms: int) -> bool: ...

    def archive_event(self, dedupe_key: str, event: str, body: bytes, *, received_at_ms: int,
                      processed_at: str, expires_at: int, group_id: str = "") -> bool: ...

    def record_account_status(self, account_id: str, user_id: str | None, *, event: str, received_at_ms: int,
                              updated_at: str, connection_status: str | None = None, error_code: str | None = None,
                              scanned_at: str | None = None) -> bool: ...

    # purging
    def purge_marker(self, account_id: str) -> dict[str, Any] | None: ...

    def begin_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, at: str) -> None: ...

    def finish_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, purged_at: str,
                     deleted: Mapping[str, int]) -> None: ...

    def forget_purge(self, account_id: str) -> None: ...

    def archived_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]: ...

    def counter_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]: ...

    def delete_keys(self, keys: list[dict[str, Any]]) -> int: ...

    def user_accounts(self, user_id: str) -> list[str]: ...

    def unlink_user(self, user_id: str, account_id: str) -> None: ...

    def delete_user(self, user_id: str) -> None: ...


class ContinuationQueue(Protocol):
    """argyle_pipeline.aws.event_queue.EventQueue."""

    def send(self, event: QueuedEvent) -> str: ...
