"""Gigs in the activities table, against moto's server: the same item shape as v1 activities (the
start index, the reconciler's keys), the version on every item, items from before v2 read as v1,
and `argyle-synced` showing gigs the way it shows activities."""

from __future__ import annotations

import json
from decimal import Decimal

import boto3
import pytest

from argyle_ops import synced_cli
from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.argyle.api_versions import V2
from argyle_pipeline.aws.activity_store import ActivityStore, stored_api_version
from local_stack.template_resources import StackResources
from tests.support.fake_argyle import as_gig, make_activity

ACCOUNT = "acc-gigs"


@pytest.fixture
def store(stack_on_server: StackResources) -> ActivityStore:
    return ActivityStore(stack_on_server.tables["ActivitiesTable"], boto3.client("dynamodb"))


def gigs(n: int) -> list[Activity]:
    return [Activity.from_api(as_gig(make_activity(ACCOUNT, i)), V2) for i in range(n)]


def test_gigs_are_indexed_by_their_start_and_carry_their_version(store: ActivityStore) -> None:
    # Given four gigs written by a listing, one of them then removed
    written = gigs(4)
    store.upsert_many(written, "2025-01-01T00:00:00.000Z")
    store.remove(ACCOUNT, [written[3].id], "2025-01-02T00:00:00Z")

    # Then the start index finds them by start_datetime, and the reconciler's keys are their starts
    low, high = written[1].raw["start_datetime"], written[2].raw["start_datetime"]
    in_range = list(store.activities_by_start_date(ACCOUNT, low, high))
    assert [i["activity_id"] for i in in_range] == [written[1].id, written[2].id]
    assert [k.activity_id for k in store.stored_keys(ACCOUNT)] == [g.id for g in written[:3]]
    # And each item holds the gig as sent, marked v2
    item = store.get_item(ACCOUNT, written[0].id)
    assert item is not None and item["activity"] == written[0].raw and stored_api_version(item) == "v2"
    assert item["start_date"] == written[0].raw["start_datetime"]


def test_an_item_written_before_v2_has_no_version_and_reads_as_v1(store: ActivityStore) -> None:
    # Given an item as the store wrote it before v2 support (no api_version attribute)
    v1 = Activity.from_api(make_activity(ACCOUNT, 9))
    store.upsert_many([v1], "2025-01-01T00:00:00.000Z")
    client = boto3.client("dynamodb")
    client.update_item(TableName=store.table_name, Key={"account_id": {"S": ACCOUNT}, "activity_id": {"S": v1.id}},
                       UpdateExpression="REMOVE api_version")

    item = store.get_item(ACCOUNT, v1.id)

    assert item is not None and "api_version" not in item and stored_api_version(item) == "v1"


def test_argyle_synced_shows_gigs_as_it_shows_activities(store: ActivityStore, stack_on_server: StackResources,
                                                         moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    written = gigs(3)
    store.upsert_many(written, "2025-01-01T00:00:00.000Z")
    tables = ["--endpoint-url", moto_server, "--activities-table", stack_on_server.tables["ActivitiesTable"],
              "--sync-state-table", stack_on_server.tables["SyncStateTable"]]

    code = synced_cli.main([*tables, "activities", ACCOUNT, "--from", written[1].raw["start_datetime"]])
    printed = json.loads(capsys.readouterr().out, parse_float=Decimal)

    assert code == 0
    assert printed == [g.raw for g in written[1:]]  # the gigs exactly, their own field names
    assert "start_datetime" in printed[0] and "start_date" not in printed[0]
