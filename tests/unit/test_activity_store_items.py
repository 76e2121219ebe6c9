"""What one stored activity holds, as people and the sync read it back: its version (microseconds
since the epoch, whatever offset the update came with), its start key, its text dates, and how
long a tombstone is kept (docs/sync.md, "The activities table"); what each write reports; and
what the reads give back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

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


def _store(**options: Any) -> ActivityStore:
    """A store on a fresh activities table in moto's in-process mock."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="activities",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "account_id", "KeyType": "HASH"},
            {"AttributeName": "activity_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("account_id", "activity_id", "start_date", "start_key")
        ],
        GlobalSecondaryIndexes=[  # as template.yaml's
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": "account_id", "KeyType": "HASH"},
                    {"AttributeName": sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": projection},
            }
            for index, sort_key, projection in (
                ("ByStartDate", "start_date", "ALL"),
                ("ByStartKey", "start_key", "KEYS_ONLY"),
            )
        ],
    )
    return ActivityStore("activities", client, **options)


@pytest.fixture
def store(moto_in_process: None) -> ActivityStore:
    return _store()


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


def _activity(n: int | str, hour: int, **fields: Any) -> Activity:
    doc = {
        "id": f"a{n}",
        "account": ACCOUNT,
        "start_date": "2024-05-01T08:00:00Z",
        "updated_at": f"2024-05-02T{hour:02d}:00:00Z",
        **fields,
    }
    return Activity.from_api(doc)


def test_a_listing_write_counts_every_created_changed_stale_and_removed_activity(store: ActivityStore):
    store.upsert_many([_activity(n, hour=10) for n in range(7)], SYNCED_AT)
    store.remove(ACCOUNT, ["a0", "a1"], SYNCED_AT)
    changes = store.track_changes()
    page = [
        _activity(0, 11),
        _activity(1, 11),  # removed at Argyle: stay removed
        _activity(2, 9),
        _activity(3, 9),  # older than the stored copies
        _activity(4, 11),
        _activity(5, 11),  # newer
        _activity(6, 10),  # the same version again
        _activity("new-1", 10),
        _activity("new-2", 10),
    ]
    result = store.upsert_many(page, SYNCED_AT)
    assert (result.removed, result.stale, result.changed, result.created, result.written) == (2, 2, 2, 2, 5)
    assert (changes.added, changes.updated, changes.removed) == (["anew-1", "anew-2"], ["a4", "a5"], [])
    assert store.live_activity(ACCOUNT, "a4") == page[4].raw and store.live_activity(ACCOUNT, "a0") is None


def test_when_a_listing_holds_one_activity_twice_at_one_version_the_later_copy_is_stored(store: ActivityStore):
    first, later = _activity(1, 10, status="in_progress"), _activity(1, 10, status="completed")
    assert store.upsert_many([first, later], SYNCED_AT).written == 1
    assert store.live_activity(ACCOUNT, "a1") == later.raw


def test_the_store_counts_exactly_the_calls_it_makes():
    # What the benchmark reports: one read per 100 activities, one write per 25, from zero.
    client = RecordingCalls()
    store = ActivityStore("activities", client)
    store.upsert_many([_activity(n, 10) for n in range(60)], SYNCED_AT)
    assert (store.read_calls, store.write_calls) == (client.reads, client.writes) == (1, 3)


class RecordingCalls:
    def __init__(self) -> None:
        self.reads = self.writes = 0
        self._lock = threading.Lock()

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.reads += 1
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.writes += 1
        return {"UnprocessedItems": {}}


def test_a_single_update_reports_what_it_did_and_records_only_real_changes(store: ActivityStore):
    changes = store.track_changes()
    outcomes = [store.upsert_one(_activity(1, hour), SYNCED_AT) for hour in (10, 11, 11, 9)]
    assert [(r.written, r.created, r.changed, r.stale, r.removed) for r in outcomes] == [
        (1, 1, 0, 0, 0),  # new
        (1, 0, 1, 0, 0),  # newer
        (1, 0, 0, 0, 0),  # the same version again: written, no change
        (0, 0, 0, 1, 0),  # older: refused
    ]
    assert store.upsert_one(_activity(2, 10), SYNCED_AT).created == 1
    assert (changes.added, changes.updated) == (["a1", "a2"], ["a1"])
    assert store.live_activity(ACCOUNT, "a1") == _activity(1, 11).raw
    store.remove(ACCOUNT, ["a1"], SYNCED_AT)
    removed = store.upsert_one(_activity(1, 12), SYNCED_AT)
    assert (removed.written, removed.removed) == (0, 1) and store.live_activity(ACCOUNT, "a1") is None
    assert store.write_calls == 7


def test_a_single_update_that_dynamodb_refuses_for_another_reason_fails_its_record(store: ActivityStore):
    missing = ActivityStore("no-such-table", store._client)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        missing.upsert_one(_activity(1, 10), SYNCED_AT)


def test_a_removal_tombstones_each_id_once_and_reports_only_live_activities_as_removed(moto_in_process: None):
    store = _store(tombstone_seconds=3_600, clock=lambda: 5_000.9)
    store.upsert_many([_activity(1, 10), _activity(2, 10)], SYNCED_AT)
    store.remove(ACCOUNT, ["a2"], SYNCED_AT)
    changes = store.track_changes()
    assert store.remove(ACCOUNT, ["a1", "a1", "", "a2", "never-seen"], "2026-11-29T01:00:00Z") == 3
    assert changes.removed == ["a1"]
    for activity_id in ("a1", "a2", "never-seen"):
        assert store.get_item(ACCOUNT, activity_id) == {
            "account_id": ACCOUNT,
            "activity_id": activity_id,
            "removed_at": "2026-11-29T01:00:00Z",
            "expires_at": 8_600,
        }


@pytest.mark.parametrize(("retention", "expires"), [(86_400, 91_400), (None, None), (0, None)])
def test_activities_expire_a_retention_after_their_last_sync_when_the_stack_sets_one(
    moto_in_process: None, retention: int | None, expires: int | None
):
    store = _store(retention_seconds=retention, clock=lambda: 5_000.9)
    store.upsert_many([_activity(1, 10)], SYNCED_AT)
    store.upsert_one(_activity(2, 10), SYNCED_AT)
    for activity_id in ("a1", "a2"):
        item = store.get_item(ACCOUNT, activity_id)
        assert item is not None and item.get("expires_at") == expires


def _reads_store() -> ActivityStore:
    """a1..a4 start on May 1st..4th, a5 has no start; a2 is removed; another account has one."""
    store = _store()
    page = [_activity(n, 10, start_date=f"2024-05-0{n}T08:00:00Z") for n in range(1, 5)]
    store.upsert_many([*page, _activity(5, 10, start_date=None)], SYNCED_AT)
    store.upsert_many([Activity.from_api({"id": "b1", "account": "acc-other", "start_date": "2024-05-01"})], SYNCED_AT)
    store.remove(ACCOUNT, ["a2"], SYNCED_AT)
    return store


def _ids(items: Any) -> list[str]:
    return [item["activity_id"] for item in items]


def test_an_accounts_activities_are_its_live_ones_unless_removed_ones_are_asked_for(moto_in_process: None):
    store = _reads_store()
    assert _ids(store.activities(ACCOUNT)) == ["a1", "a3", "a4", "a5"]
    assert _ids(store.activities(ACCOUNT, include_removed=True)) == ["a1", "a2", "a3", "a4", "a5"]
    assert store.count(ACCOUNT) == {"live": 4, "removed": 1}
    assert sorted(store.item_ids(ACCOUNT)) == ["a1", "a2", "a3", "a4", "a5"] and len(store.item_ids(ACCOUNT, 2)) == 2


def test_activities_by_start_date_are_the_live_dated_ones_within_inclusive_bounds_oldest_first(moto_in_process: None):
    store = _reads_store()
    assert _ids(store.activities_by_start_date(ACCOUNT)) == ["a1", "a3", "a4"]
    assert _ids(store.activities_by_start_date(ACCOUNT, "2024-05-03T08:00:00Z")) == ["a3", "a4"]
    assert _ids(store.activities_by_start_date(ACCOUNT, None, "2024-05-03T08:00:00Z")) == ["a1", "a3"]
    assert _ids(store.activities_by_start_date(ACCOUNT, "2024-05-01T08:00:01Z", "2024-05-04T08:00:00Z")) == ["a3", "a4"]


def test_the_reconcilers_keys_are_every_live_activity_sorted_by_start_undated_last(moto_in_process: None):
    store = _reads_store()
    assert [(k.start_key, k.activity_id) for k in store.stored_keys(ACCOUNT)] == [
        ("2024-05-01T08:00:00.000000Z", "a1"),
        ("2024-05-03T08:00:00.000000Z", "a3"),
        ("2024-05-04T08:00:00.000000Z", "a4"),
        ("~", "a5"),
    ]


def test_a_resync_finds_the_live_activities_its_listing_did_not_write(moto_in_process: None):
    store = _reads_store()
    store.upsert_many([_activity(1, 10), _activity(4, 10)], SYNCED_AT, resync_marker="resync-2")
    store.upsert_many([_activity(3, 10)], SYNCED_AT, resync_marker="resync-1")
    assert sorted(store.live_ids_not_marked(ACCOUNT, "resync-2")) == ["a3", "a5"]


def test_deleting_an_accounts_items_removes_live_copies_and_tombstones_alike(moto_in_process: None):
    store = _reads_store()
    assert store.delete_many(ACCOUNT, ["a1", "a2", "a1"]) == 2
    assert _ids(store.activities(ACCOUNT, include_removed=True)) == ["a3", "a4", "a5"]
    assert store.item_ids("acc-other") == ["b1"]


class PagedQueries:
    """DynamoDB answering every Query one page at a time (as past 1 MB): three pages of two items."""

    def __init__(self) -> None:
        self.queries = 0

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.queries += 1
        page = int(kwargs.get("ExclusiveStartKey", {}).get("page", {}).get("N", "0"))
        items = [
            {"account_id": {"S": ACCOUNT}, "activity_id": {"S": f"a{2 * page + n}"}, "start_key": {"S": "~"}}
            for n in range(2)
        ]
        response: dict[str, Any] = {"Items": items, "Count": len(items)}
        if page < 2:
            response["LastEvaluatedKey"] = {"page": {"N": str(page + 1)}}
        return response


def test_every_read_of_an_account_goes_through_all_of_its_pages():
    every = ["a0", "a1", "a2", "a3", "a4", "a5"]
    store = ActivityStore("activities", PagedQueries())
    assert _ids(store.activities(ACCOUNT)) == every
    assert _ids(store.activities_by_start_date(ACCOUNT, "2024-01-01")) == every
    assert store.live_ids_not_marked(ACCOUNT, "resync-1") == every
    assert [k.activity_id for k in store.stored_keys(ACCOUNT)] == every
    assert store.count(ACCOUNT) == {"live": 6, "removed": 6}
    assert store.read_calls == 5 * 3 + 3


class TiedStarts:
    """The ByStartKey index answering with three activities of one start, in no particular order
    (DynamoDB orders a Query by the sort key only)."""

    def query(self, **kwargs: Any) -> dict[str, Any]:
        return {"Items": [{"activity_id": {"S": i}, "start_key": {"S": "2024-05-01T08:00:00.000000Z"}} for i in "cab"]}


def test_the_reconcilers_keys_of_one_start_are_in_id_order():
    assert [k.activity_id for k in ActivityStore("activities", TiedStarts()).stored_keys(ACCOUNT)] == ["a", "b", "c"]


def test_every_read_a_write_depends_on_is_strongly_consistent(store: ActivityStore):
    # DynamoDB reads are eventually consistent unless asked otherwise (moto's are always consistent):
    # an eventual read of the stored versions could miss the previous event's write, and an older
    # copy would then be written over a newer one. So the versions a page is checked against, and a
    # single activity's read, ask for a consistent read.
    asked: list[tuple[str, Any]] = []

    def note(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "BatchGetItem":
            asked.extend(("BatchGetItem", keys.get("ConsistentRead")) for keys in params["RequestItems"].values())
        if model.name == "GetItem":
            asked.append(("GetItem", params.get("ConsistentRead")))

    store._client.meta.events.register("provide-client-params.dynamodb.*", note)
    store.upsert_many([_activity(n, 10) for n in range(3)], SYNCED_AT)
    store.upsert_many([_activity(n, 11) for n in range(3)], SYNCED_AT)
    store.get_item(ACCOUNT, _activity(0, 10).id)

    assert asked and set(asked) == {("BatchGetItem", True), ("GetItem", True)}


def test_the_store_counts_its_single_reads_and_its_id_listings_too(store: ActivityStore):
    # What the reads figure covers: every call that reads the table, one each.
    store.upsert_many([_activity(n, 10) for n in range(3)], SYNCED_AT)
    before = store.read_calls

    store.get_item(ACCOUNT, _activity(0, 10).id)
    store.item_ids(ACCOUNT)

    assert store.read_calls == before + 2
