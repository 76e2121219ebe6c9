"""What one stored activity holds, as people and the sync read it back: its version (microseconds
since the epoch, whatever offset the update came with), its start key, its text dates, and how
long a tombstone is kept (docs/sync.md, "The activities table")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore, activity_item, activity_version, start_key

ACCOUNT = "acc-items"
SYNCED_AT = "2026-11-29T00:00:00.000Z"
PLUS_TWO = timezone(timedelta(hours=2))
MAY_FIRST_NOON = 1_714_564_800  # 2024-05-01T12:00:00Z in epoch seconds


def test_the_stored_version_is_the_update_in_microseconds_since_the_epoch():
    # Items written by every earlier release hold this number: a new release must compare the same way.
    updated = Activity.from_api({"id": "a1", "account": ACCOUNT, "updated_at": "2024-05-01T12:00:00.000001Z"})
    assert activity_item(updated, SYNCED_AT)["version"] == {"N": str(MAY_FIRST_NOON * 1_000_000 + 1)}
    assert activity_version(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert activity_version(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1


def test_an_update_one_microsecond_later_is_a_newer_version():
    first = datetime(2024, 5, 1, 12, 0, 0, 0, tzinfo=UTC)
    for step in range(1, 4):
        assert activity_version(first + timedelta(microseconds=step)) == activity_version(first) + step


def test_an_activity_without_updated_at_is_stored_as_the_oldest_version():
    undated = Activity.from_api({"id": "a1", "account": ACCOUNT, "updated_at": None})
    assert activity_item(undated, SYNCED_AT)["version"] == {"N": "0"}


def test_an_update_written_with_an_offset_has_the_version_of_its_instant():
    in_utc = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert activity_version(datetime(2024, 5, 1, 14, 0, tzinfo=PLUS_TWO)) == activity_version(in_utc)
    assert activity_version(datetime(2024, 5, 1, 12, 0)) == activity_version(in_utc)  # naive: UTC, as Argyle's


def test_a_start_written_with_an_offset_is_keyed_by_its_instant_in_utc():
    assert start_key(datetime(2024, 5, 1, 14, 0, tzinfo=PLUS_TWO)) == "2024-05-01T12:00:00.000000Z"
    assert start_key(datetime(2024, 5, 1, 12, 0)) == "2024-05-01T12:00:00.000000Z"  # naive: UTC, as Argyle's


@pytest.fixture
def store(moto_in_process: None) -> ActivityStore:
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="activities",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "account_id", "KeyType": "HASH"},
            {"AttributeName": "activity_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "account_id", "AttributeType": "S"},
            {"AttributeName": "activity_id", "AttributeType": "S"},
        ],
    )
    return ActivityStore("activities", client)


def test_an_activity_whose_dates_came_as_epoch_seconds_is_stored_by_both_write_paths(store: ActivityStore):
    # Argyle's dates are strings; a number is still read as an instant, and the activity must be stored
    # (keyed and versioned by it), with no text date attribute, rather than failing its whole batch.
    docs: list[dict[str, Any]] = [
        {"id": f"a{n}", "account": ACCOUNT, "start_date": MAY_FIRST_NOON, "updated_at": MAY_FIRST_NOON} for n in (1, 2)
    ]
    assert store.upsert_many([Activity.from_api(docs[0])], SYNCED_AT).written == 1
    assert store.upsert_one(Activity.from_api(docs[1]), SYNCED_AT).written == 1
    for doc in docs:
        item = store.get_item(ACCOUNT, doc["id"])
        assert item is not None and item["activity"] == doc
        assert item["version"] == MAY_FIRST_NOON * 1_000_000 and item["start_key"] == "2024-05-01T12:00:00.000000Z"
        assert "start_date" not in item and "updated_at" not in item


def test_a_tombstone_is_kept_35_days_unless_the_stack_says_otherwise():
    # 35 days is TOMBSTONE_DAYS's default: a store built without a lifetime keeps tombstones as long.
    written: list[dict[str, Any]] = []

    class Client:
        def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
            written.extend(r["PutRequest"]["Item"] for r in RequestItems["activities"])
            return {"UnprocessedItems": {}}

    ActivityStore("activities", Client(), clock=lambda: 1_000_000.5).remove(ACCOUNT, ["a1"], SYNCED_AT)
    assert [item["expires_at"] for item in written] == [{"N": str(1_000_000 + 35 * 86_400)}]
