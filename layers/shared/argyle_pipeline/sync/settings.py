"""The sync function's settings, from environment variables (template.yaml sets them), read inside
a handler call and cached; tests call `sync_settings.cache_clear()` after changing the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from argyle_pipeline.argyle.api_versions import UNSET_VERSION, ApiVersion, api_base_url, api_version
from argyle_pipeline.sync.retry_schedule import (
    DEFAULT_DELAYS_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    RetrySchedule,
    parse_delays,
)

DAY_SECONDS = 86_400


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in {"1", "true", "yes", "on"}


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def _delays(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = os.environ.get(name, "").strip()
    return parse_delays(value) if value else default


@dataclass(frozen=True)
class SyncSettings:
    activities_table: str
    sync_state_table: str
    idempotency_table: str
    queue_url: str
    argyle_api_url: str
    argyle_credentials_secret_id: str
    # ARGYLE_API_VERSION (template: ArgyleApiVersion); absent is v1, what stacks ran before v2.
    argyle_api: ApiVersion = UNSET_VERSION
    event_archive_days: int = 90
    idempotency_days: int = 30
    # A tombstone must outlive every message that could still carry a stale copy of the activity:
    # 14 days in the queue plus 14 in the DLQ before a redrive, and some margin.
    tombstone_days: int = 35
    # Below this much remaining time a listing stops after its current page and enqueues the rest.
    continuation_margin_ms: int = 120_000
    # activities.updated: how many GET /activities/{id} run at once.
    fetch_concurrency: int = 4
    # A large listing's start-date windows listed at once (LISTING_WINDOWS; template ListingWindows),
    # and the activity count above which a listing is split (LISTING_WINDOW_THRESHOLD).
    listing_windows: int = 4
    listing_window_threshold: int = 2_000
    argyle_timeout_seconds: float = 30.0
    argyle_max_attempts: int = 5
    argyle_page_limit: int = 200
    # Per invocation; a part that reaches it continues in another message instead of failing.
    argyle_max_pages: int = 2_000
    secret_max_age_seconds: int = 300
    # BatchWriteItem/BatchGetItem rounds for UnprocessedItems before the message is failed and retried.
    dynamodb_max_rounds: int = 8
    # fully_synced lists the whole account (catches activities with a null start_date) instead of
    # only [available_from, available_to].
    full_sync_whole_account: bool = True
    # A failed record's delay before each retry, and the queue's maxReceiveCount (retry_schedule.py).
    retry_delays_seconds: tuple[int, ...] = DEFAULT_DELAYS_SECONDS
    max_receive_count: int = DEFAULT_MAX_ATTEMPTS

    @property
    def retry_schedule(self) -> RetrySchedule:
        return RetrySchedule(self.retry_delays_seconds, self.max_receive_count)
    # activities.updated / .removed: ids checked with Argyle per invocation (the rest continue).
    changes_per_part: int = 500
    # A reconcile of scope "recent" re-lists this many days back.
    reconcile_recent_days: int = 30
    # Activities expire (DynamoDB TTL) this many days after their last sync; 0 keeps them.
    activity_retention_days: int = 0
    # The whole stack's Argyle requests per second, shared by every invocation (0: no shared limit),
    # over this many bucket items (argyle/request_budget.py).
    argyle_requests_per_second: float = 40.0
    argyle_budget_shards: int = 8
    # The EventBridge bus change events go to (PublishChangeEvents); empty: none are published.
    change_event_bus: str = ""

    @property
    def event_archive_seconds(self) -> int:
        return self.event_archive_days * DAY_SECONDS

    @property
    def idempotency_seconds(self) -> int:
        return self.idempotency_days * DAY_SECONDS

    @property
    def activity_retention_seconds(self) -> int | None:
        return self.activity_retention_days * DAY_SECONDS if self.activity_retention_days > 0 else None

    @property
    def tombstone_seconds(self) -> int:
        return self.tombstone_days * DAY_SECONDS


@cache
def sync_settings() -> SyncSettings:
    # An unknown version, or a URL of the other version, is refused here (UnknownApiVersion names both).
    api = api_version(os.environ.get("ARGYLE_API_VERSION"))
    return SyncSettings(
        activities_table=os.environ["ACTIVITIES_TABLE"],
        sync_state_table=os.environ["SYNC_STATE_TABLE"],
        idempotency_table=os.environ["IDEMPOTENCY_TABLE"],
        queue_url=os.environ["EVENTS_QUEUE_URL"],
        argyle_api_url=api_base_url(api, os.environ.get("ARGYLE_API_URL")),
        argyle_api=api,
        argyle_credentials_secret_id=os.environ.get("ARGYLE_CREDENTIALS_SECRET_ID", ""),
        event_archive_days=_int("EVENT_ARCHIVE_DAYS", 90),
        idempotency_days=_int("IDEMPOTENCY_DAYS", 30),
        tombstone_days=_int("TOMBSTONE_DAYS", 35),
        continuation_margin_ms=int(_float("CONTINUATION_MARGIN_SECONDS", 120.0) * 1000),
        fetch_concurrency=max(1, _int("ARGYLE_FETCH_CONCURRENCY", 4)),
        listing_windows=max(1, _int("LISTING_WINDOWS", 4)),
        listing_window_threshold=max(0, _int("LISTING_WINDOW_THRESHOLD", 2_000)),
        argyle_timeout_seconds=_float("ARGYLE_TIMEOUT_SECONDS", 30.0),
        argyle_max_attempts=_int("ARGYLE_MAX_ATTEMPTS", 5),
        argyle_page_limit=_int("ARGYLE_PAGE_LIMIT", 200),
        argyle_max_pages=_int("ARGYLE_MAX_PAGES", 2_000),
        secret_max_age_seconds=_int("SECRET_MAX_AGE_SECONDS", 300),
        dynamodb_max_rounds=_int("DYNAMODB_MAX_ROUNDS", 8),
        full_sync_whole_account=_flag("FULL_SYNC_WHOLE_ACCOUNT", True),
        retry_delays_seconds=_delays("RETRY_DELAYS_SECONDS", DEFAULT_DELAYS_SECONDS),
        max_receive_count=_int("MAX_RECEIVE_COUNT", DEFAULT_MAX_ATTEMPTS),
        changes_per_part=max(1, _int("CHANGES_PER_PART", 500)),
        reconcile_recent_days=max(0, _int("RECONCILE_RECENT_DAYS", 30)),
        activity_retention_days=max(0, _int("ACTIVITY_RETENTION_DAYS", 0)),
        argyle_requests_per_second=max(0.0, _float("ARGYLE_REQUESTS_PER_SECOND", 40.0)),
        argyle_budget_shards=max(1, _int("ARGYLE_BUDGET_SHARDS", 8)),
        change_event_bus=os.environ.get("CHANGE_EVENT_BUS", "").strip(),
    )
