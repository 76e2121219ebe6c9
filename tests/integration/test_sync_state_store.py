"""The sync-state table (moto, from template.yaml): account status that never downgrades,
availability ordered by receive time, user records, and the archive that counts each event once."""

from __future__ import annotations

import boto3
import pytest

from argyle_pipeline.aws.sync_state_store import SyncStateStore
from local_stack.template_resources import StackResources

ACCOUNT, USER = "acc-state", "user-state"


@pytest.fixture
def state(stack_in_process: StackResources) -> SyncStateStore:
    return SyncStateStore(stack_in_process.tables["SyncStateTable"], boto3.client("dynamodb"))


def availability(state: SyncStateStore, received_at_ms: int, count: int, event: str = "activities.added",
                 **kwargs: object) -> bool:
    return state.record_availability(
        ACCOUNT, USER, available_from="2024-01-01T00:00:00Z", available_to="2024-06-01T00:00:00Z",
        available_count=count, event=event, received_at_ms=received_at_ms, updated_at="now", **kwargs)


def test_fully_synced_is_never_downgraded_by_a_partial_sync(state: SyncStateStore):
    # Given an account marked fully synced
    state.mark_fully_synced(ACCOUNT, USER, "2025-01-01T00:00:00Z")
    # When a partially_synced (delivered late) is recorded
    state.mark_partially_synced(ACCOUNT, USER, 30, "2025-01-02T00:00:00Z")
    # Then the status stays fully_synced, while days_synced and the partial time are recorded
    item = state.account_state(ACCOUNT)
    assert item is not None
    assert item["status"] == "fully_synced" and item["days_synced"] == 30
    assert item["fully_synced_at"] == "2025-01-01T00:00:00Z"
    assert item["partially_synced_at"] == "2025-01-02T00:00:00Z"
    assert item["user_id"] == USER and item["account_id"] == ACCOUNT


def test_a_partial_sync_first_then_the_full_sync_upgrades(state: SyncStateStore):
    state.mark_partially_synced(ACCOUNT, USER, 7, "t1")
    assert state.account_state(ACCOUNT)["status"] == "partially_synced"  # type: ignore[index]
    state.mark_fully_synced(ACCOUNT, USER, "t2")
    assert state.account_state(ACCOUNT)["status"] == "fully_synced"  # type: ignore[index]


def test_availability_follows_the_latest_received_event_whatever_the_processing_order(state: SyncStateStore):
    # Given availability recorded from an event received at t=200
    assert availability(state, 200, count=12) is True
    # When an event received earlier (t=100) is processed afterwards
    assert availability(state, 100, count=10) is False
    # Then the newer numbers stay; a later one (t=300) replaces them, null dates removing the dates
    assert state.account_state(ACCOUNT)["available_count"] == 12  # type: ignore[index]
    assert state.record_availability(ACCOUNT, USER, available_from=None, available_to=None, available_count=0,
                                     event="activities.removed", received_at_ms=300, updated_at="now")
    item = state.account_state(ACCOUNT)
    assert item is not None and item["available_count"] == 0 and "available_from" not in item
    assert item["last_event"] == "activities.removed" and item["last_event_received_at_ms"] == 300


def test_a_partial_window_does_not_replace_a_full_syncs_availability(state: SyncStateStore):
    # Given a fully synced account
    availability(state, 100, count=500, event="activities.fully_synced")
    state.mark_fully_synced(ACCOUNT, USER, "t")
    # When a partially_synced received later is recorded
    recorded = availability(state, 200, count=30, event="activities.partially_synced", unless_fully_synced=True)
    # Then the account-wide numbers stay
    assert recorded is False
    assert state.account_state(ACCOUNT)["available_count"] == 500  # type: ignore[index]


def test_a_user_record_keeps_the_resource_and_ignores_an_older_delivery(state: SyncStateStore):
    resource = {"id": USER, "employers_connected": ["Whole Goods"], "external_metadata": {"k": [1, "x"]},
                "created_at": "2022-09-29T19:55:43.166095Z", "x_extra": None}
    assert state.put_user(USER, resource, "t2", received_at_ms=200) is True
    assert state.put_user(USER, {"id": USER}, "t1", received_at_ms=100) is False
    item = state.user(USER)
    assert item is not None and item["resource"] == resource and item["synced_at"] == "t2"


def test_an_archived_event_keeps_its_exact_bytes_and_is_counted_once(state: SyncStateStore):
    body = b'{"event": "accounts.updated", "data": {"account": "a", "note": "caf\\u00e9"}}'
    # When the same event is archived twice (a redelivery after its idempotency record expired)
    first = state.archive_event("k1", "accounts.updated", body, received_at_ms=1, processed_at="t",
                                expires_at=2_000_000_000)
    second = state.archive_event("k1", "accounts.updated", body, received_at_ms=2, processed_at="t",
                                 expires_at=2_000_000_000)
    state.archive_event("k2", "activities.added", b"{}", received_at_ms=3, processed_at="t", expires_at=1)
    # Then it is stored once with its bytes and TTL, and counted once
    assert (first, second) == (True, False)
    item = state.archived_event("k1")
    assert item is not None and item["body"] == body and item["expires_at"] == 2_000_000_000
    assert state.event_counts() == {"accounts.updated": 1, "activities.added": 1}
