"""The activities table (moto, created from template.yaml): exact copies, monotonic writes,
tombstones, batches of 25 with UnprocessedItems retried, and the documented queries."""

from __future__ import annotations

import math
import time
from decimal import Decimal

import boto3
import pytest

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore, DynamoDBIncomplete, activity_version
from local_stack.template_resources import StackResources
from tests.support.fake_argyle import BASE_TIME, iso, make_activity
from tests.support.flaky_dynamodb import FlakyDynamoDB

ACCOUNT = "acc-store"
SYNCED_AT = "2025-01-01T00:00:00.000Z"


class RecordedSleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def activity(n: int, *, updated_hours: int = 0, account: str = ACCOUNT, **changes: object) -> Activity:
    from datetime import timedelta

    doc = make_activity(account, n, updated=BASE_TIME + timedelta(days=30, hours=updated_hours))
    doc.update(changes)
    return Activity.from_api(doc)


@pytest.fixture
def client(stack_in_process: StackResources) -> object:
    return boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def store(stack_in_process: StackResources, client: object) -> ActivityStore:
    return ActivityStore(stack_in_process.tables["ActivitiesTable"], client, sleep=RecordedSleeps())


def test_the_whole_argyle_object_is_kept_exactly_with_its_keys(store: ActivityStore):
    # Given an activity with string money, JSON-number rates, nulls and a field nobody documented
    act = activity(1)
    # When it is stored
    store.upsert_many([act], SYNCED_AT)
    # Then the stored copy equals what Argyle sent, numbers as exact Decimals
    item = store.get_item(ACCOUNT, act.id)
    assert item is not None
    assert item["activity"] == act.raw
    assert item["activity"]["income"]["pay"] == "9.04"
    assert item["activity"]["income_rates"]["hour"] == Decimal("2.83")
    assert item["activity"]["income"]["taxes"] is None
    assert item["activity"]["x_new_field"] == {"nested": [1, Decimal("2.5"), "three"]}
    # And the key attributes are the activity's, start_date and updated_at as sent
    assert (item["account_id"], item["activity_id"]) == (ACCOUNT, act.id)
    assert item["start_date"] == act.raw["start_date"] and item["updated_at"] == act.raw["updated_at"]
    assert item["version"] == activity_version(act.updated_at) and item["synced_at"] == SYNCED_AT


def test_an_activity_without_start_date_is_stored_but_not_indexed(store: ActivityStore):
    # Given an activity whose start_date is null
    act = activity(2, start_date=None)
    # When it is stored
    store.upsert_many([act], SYNCED_AT)
    # Then it is readable by id and by account, but absent from the start-date index
    assert store.live_activity(ACCOUNT, act.id) == act.raw
    assert [i["activity_id"] for i in store.activities(ACCOUNT)] == [act.id]
    assert list(store.activities_by_start_date(ACCOUNT)) == []


def test_batches_are_25_items_and_one_read_per_100(store: ActivityStore):
    # Given 260 activities
    acts = [activity(n) for n in range(260)]
    # When they are upserted together
    result = store.upsert_many(acts, SYNCED_AT)
    # Then ceil(260/25) BatchWriteItem calls and ceil(260/100) BatchGetItem calls were made
    assert result.written == 260
    assert store.write_calls == math.ceil(260 / 25) and store.read_calls == math.ceil(260 / 100)
    assert store.count(ACCOUNT) == {"live": 260, "removed": 0}


def test_an_older_version_never_overwrites_a_newer_one_in_a_batch(store: ActivityStore):
    # Given version 2 of an activity is stored
    newer = activity(3, updated_hours=2, status="completed")
    store.upsert_many([newer], SYNCED_AT)
    # When version 1 arrives late in a batch next to a new activity
    older = activity(3, updated_hours=1, status="in_progress")
    other = activity(4)
    result = store.upsert_many([older, other], SYNCED_AT)
    # Then the old copy is skipped, the new activity written, and version 2 remains
    assert (result.written, result.stale) == (1, 1)
    assert store.live_activity(ACCOUNT, newer.id) == newer.raw


def test_an_older_version_never_overwrites_a_newer_one_with_a_conditional_write(store: ActivityStore):
    # Given version 2 stored
    newer = activity(5, updated_hours=2, status="completed")
    store.upsert_one(newer, SYNCED_AT)
    # When version 1 is written alone (the activities.updated path)
    result = store.upsert_one(activity(5, updated_hours=1, status="in_progress"), SYNCED_AT)
    # Then the condition refuses it
    assert (result.written, result.stale) == (0, 1)
    assert store.live_activity(ACCOUNT, newer.id) == newer.raw
    # And a newer version 3 does replace it, as does the same version again
    newest = activity(5, updated_hours=3, status="cancelled")
    assert store.upsert_one(newest, SYNCED_AT).written == 1
    assert store.upsert_one(newest, SYNCED_AT).written == 1
    assert store.live_activity(ACCOUNT, newer.id) == newest.raw


def test_a_removal_is_not_undone_by_a_late_stale_write(store: ActivityStore):
    # Given a stored activity that Argyle then removed
    act = activity(6)
    store.upsert_many([act], SYNCED_AT)
    before = int(time.time())
    assert store.remove(ACCOUNT, [act.id, act.id], "2025-01-02T00:00:00Z") == 1
    # When a copy of it (even one with a newer updated_at) arrives late, by either write path
    late = activity(6, updated_hours=99)
    batch = store.upsert_many([late], SYNCED_AT)
    single = store.upsert_one(late, SYNCED_AT)
    # Then both are refused and the tombstone stays: out of reads and out of the start-date index
    assert (batch.written, batch.removed) == (0, 1)
    assert (single.written, single.removed) == (0, 1)
    assert store.live_activity(ACCOUNT, act.id) is None
    tombstone = store.get_item(ACCOUNT, act.id)
    assert tombstone is not None and set(tombstone) == {"account_id", "activity_id", "removed_at", "expires_at"}
    assert before + store.tombstone_seconds <= tombstone["expires_at"] <= int(time.time()) + store.tombstone_seconds
    assert list(store.activities(ACCOUNT)) == []
    assert list(store.activities_by_start_date(ACCOUNT)) == []
    assert store.count(ACCOUNT) == {"live": 0, "removed": 1}


def test_a_removal_of_an_activity_never_seen_blocks_it_arriving_later(store: ActivityStore):
    # Given activities.removed processed before the added that would have brought the activity
    act = activity(7)
    store.remove(ACCOUNT, [act.id], "2025-01-02T00:00:00Z")
    # When the activity is then written
    result = store.upsert_many([act], SYNCED_AT)
    # Then it is not resurrected
    assert result.removed == 1 and store.live_activity(ACCOUNT, act.id) is None


def test_unprocessed_items_are_retried_with_growing_backoff(stack_in_process: StackResources, client: object):
    # Given DynamoDB leaving half of each of the next 3 batch calls unprocessed
    flaky = FlakyDynamoDB(client)
    sleeps = RecordedSleeps()
    store = ActivityStore(stack_in_process.tables["ActivitiesTable"], flaky, sleep=sleeps, rand=lambda: 1.0,
                          backoff_base=0.05, backoff_cap=2.0)
    flaky.unprocessed_next = 3
    acts = [activity(n) for n in range(25)]
    # When 25 activities are upserted (the version read takes the 3 partial answers)
    store.upsert_many(acts, SYNCED_AT)
    # Then every key was read after retries that waited longer each time, and all were written
    assert sleeps == [0.1, 0.2, 0.4]
    assert flaky.calls == {"batch_get_item": 4, "batch_write_item": 1}
    assert sorted(i["activity_id"] for i in store.activities(ACCOUNT)) == sorted(a.id for a in acts)
    # When 2 more batch writes come back partial (25 tombstones)
    sleeps.clear()
    flaky.unprocessed_next = 2
    store.remove(ACCOUNT, [a.id for a in acts], "2025-01-02T00:00:00Z")
    # Then the unprocessed rest is written again until none is left
    assert sleeps == [0.1, 0.2]
    assert flaky.calls["batch_write_item"] == 1 + 3
    assert store.count(ACCOUNT) == {"live": 0, "removed": 25}


def test_items_still_unprocessed_after_the_bounded_rounds_fail_the_message(
        stack_in_process: StackResources, client: object):
    # Given DynamoDB that keeps leaving items unprocessed
    flaky = FlakyDynamoDB(client, p_unprocessed=1.0)
    store = ActivityStore(stack_in_process.tables["ActivitiesTable"], flaky, sleep=RecordedSleeps(),
                          max_rounds=4)
    # When a batch is written, Then it raises (so SQS retries the message) instead of losing items
    with pytest.raises(DynamoDBIncomplete):
        store.remove(ACCOUNT, [f"id-{n}" for n in range(10)], "2025-01-02T00:00:00Z")
    assert flaky.calls["batch_write_item"] == 4


def test_the_start_date_index_answers_a_range_oldest_first(store: ActivityStore):
    # Given 10 activities an hour apart, one of them removed
    acts = [activity(n) for n in range(10)]
    store.upsert_many(acts, SYNCED_AT)
    store.remove(ACCOUNT, [acts[4].id], "2025-01-02T00:00:00Z")
    # When the account is queried for starts between hours 3 and 6
    from datetime import timedelta

    found = list(store.activities_by_start_date(ACCOUNT, iso(BASE_TIME + timedelta(hours=3)),
                                                iso(BASE_TIME + timedelta(hours=6))))
    # Then the live activities of that range come back in start order
    assert [f["activity_id"] for f in found] == [acts[n].id for n in (3, 5, 6)]
    assert [f["activity"] for f in found] == [acts[n].raw for n in (3, 5, 6)]


def test_the_start_date_index_answers_a_range_open_at_either_end(store: ActivityStore):
    # Given 6 activities an hour apart
    from datetime import timedelta

    acts = [activity(n) for n in range(6)]
    store.upsert_many(acts, SYNCED_AT)
    hour = [iso(BASE_TIME + timedelta(hours=n)) for n in range(6)]
    # When only an upper bound is given, then every start up to it (inclusive) comes back, oldest first
    assert [f["activity_id"] for f in store.activities_by_start_date(ACCOUNT, start_to=hour[2])] == \
        [acts[n].id for n in (0, 1, 2)]
    # And only a lower bound: every start from it on
    assert [f["activity_id"] for f in store.activities_by_start_date(ACCOUNT, start_from=hour[4])] == \
        [acts[n].id for n in (4, 5)]
