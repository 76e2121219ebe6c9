"""What every rule of the sync shares: its collaborators (the ports), its options, its clock, and
the bounded-concurrency read of Argyle's current copy of a list of activities."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.argyle.api_versions import UNSET_VERSION, ApiVersion
from argyle_pipeline.argyle.client import ActivityNotFound
from argyle_pipeline.sync.ports import ActivitySource, ActivityWriter, ContinuationQueue, StateWriter
from argyle_pipeline.timestamps import iso_z


@dataclass(frozen=True)
class SyncOptions:
    continuation_margin_ms: int = 120_000
    event_archive_seconds: int = 90 * 86_400
    # fully_synced lists the whole account rather than [available_from, available_to]: the same
    # activities, plus those without a start_date, which no date filter can match.
    full_sync_whole_account: bool = True
    # Argyle's page size: a reconcile lists a window once Argyle counts at most this many in it.
    page_limit: int = 200
    # activities.updated / .removed: ids checked with Argyle per invocation; the rest continue in
    # messages of their own.
    changes_per_part: int = 500
    # What a reconcile of scope "recent" re-lists every time (tips and adjustments land there).
    reconcile_recent_days: int = 30
    # The stack's Argyle API version: its data-set events are synced, the other version's archived.
    api: ApiVersion = UNSET_VERSION
    # Record each message's real changes for change events (CHANGE_EVENT_BUS set).
    track_changes: bool = False
    # A `*_synced` or re-sync listing of more activities than the threshold is listed as this many
    # start-date windows at once (sync/listing_windows.py); 1: always one sequence.
    listing_windows: int = 4
    window_threshold: int = 2_000


def iso_or_none(value: datetime | None) -> str | None:
    return iso_z(value) if value is not None else None


@dataclass
class SyncContext:
    argyle: ActivitySource
    activities: ActivityWriter
    state: StateWriter
    continuations: ContinuationQueue
    options: SyncOptions
    # Each fetching thread borrows one of these clients (a client is not shared between threads);
    # none given means one at a time with `argyle`.
    fetchers: Sequence[ActivitySource] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def argyle_retries(self) -> int:
        return sum(client.retries for client in self._clients())

    @property
    def argyle_calls(self) -> int:
        return sum(client.calls for client in self._clients())

    def _clients(self) -> list[ActivitySource]:
        return list({id(c): c for c in [self.argyle, *self.fetchers]}.values())

    def fetch_current(self, ids: list[str]) -> list[tuple[str, Activity | None]]:
        """Argyle's copy of each id now (None: Argyle answers 404), `len(fetchers)` at a time."""
        def fetch_with(client: ActivitySource, activity_id: str) -> tuple[str, Activity | None]:
            try:
                return activity_id, client.get_activity(activity_id)
            except ActivityNotFound:
                return activity_id, None

        if len(self.fetchers) <= 1 or len(ids) <= 1:
            client = self.fetchers[0] if self.fetchers else self.argyle
            return [fetch_with(client, activity_id) for activity_id in ids]

        free: queue.SimpleQueue[ActivitySource] = queue.SimpleQueue()
        for client in self.fetchers:
            free.put(client)

        def fetch(activity_id: str) -> tuple[str, Activity | None]:
            client = free.get()
            try:
                return fetch_with(client, activity_id)
            finally:
                free.put(client)

        pool = ThreadPoolExecutor(max_workers=len(self.fetchers), thread_name_prefix="argyle-fetch")
        try:
            return list(pool.map(fetch, ids))
        finally:
            # On the first error, fetches not yet started are dropped; the message is retried.
            pool.shutdown(wait=True, cancel_futures=True)
