"""The archive's event counters (moto, from template.yaml): one counter per message group and
event, no transaction, and each event counted once however the archive's writes fail and are
retried."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from argyle_pipeline.aws.sync_state_store import COUNT_SHARDS, SyncStateStore, count_key
from local_stack.template_resources import StackResources

GROUP = "account:acc-counters"


class FailsOnce:
    """A DynamoDB client whose next call of `operation` raises, as after botocore's retries."""

    def __init__(self, client: Any, operation: str) -> None:
        self._client, self.operation, self.failed = client, operation, False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if name != self.operation or self.failed:
            return target

        def fail(**_: Any) -> Any:
            self.failed = True
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, name)

        return fail


@pytest.fixture
def table(stack_in_process: StackResources) -> str:
    return stack_in_process.tables["SyncStateTable"]


def archive(state: SyncStateStore, key: str, event: str = "activities.added", group: str = GROUP) -> bool:
    return state.archive_event(key, event, b"{}", received_at_ms=1, processed_at="t", expires_at=2_000_000_000,
                               group_id=group)


@pytest.mark.parametrize("failing", ["update_item", "put_item"])
def test_a_failed_archive_retried_counts_the_event_once(table: str, failing: str) -> None:
    # Given the archive's counter update (or its put, after the counter) failing once
    plain = boto3.client("dynamodb")
    archive(SyncStateStore(table, plain), "k0")
    flaky = FailsOnce(plain, failing)
    state = SyncStateStore(table, flaky)
    # When a record's archive fails, and the record is retried
    with pytest.raises(ClientError):
        archive(state, "k1")
    assert archive(state, "k1") is True
    # Then the event is archived and counted once (with the group's earlier one)
    assert flaky.failed
    assert SyncStateStore(table, plain).event_counts() == {"activities.added": 2}
    assert SyncStateStore(table, plain).archived_event("k1") is not None


def test_a_redelivery_after_later_records_is_not_counted_again(table: str) -> None:
    state = SyncStateStore(table, boto3.client("dynamodb"))
    # Given an event archived, then other events of its group
    assert archive(state, "k1") is True
    assert archive(state, "k2") is True
    # When the first is archived again (its idempotency record expired), then it is not counted again
    assert archive(state, "k1") is False
    assert state.event_counts() == {"activities.added": 2}


def test_counts_sum_every_group_and_the_counters_of_older_stacks(table: str) -> None:
    client = boto3.client("dynamodb")
    state = SyncStateStore(table, client)
    # Given events of many groups (spread over the shards), and an unsharded counter an older stack wrote
    groups = [f"account:a{i}" for i in range(40)]
    for i, group in enumerate(groups):
        archive(state, f"k{i}", group=group)
    archive(state, "u1", event="users.fully_synced", group="user:u1")
    client.put_item(TableName=table, Item={"pk": {"S": "COUNTS"}, "sk": {"S": "EVENT#activities.added"},
                                           "count": {"N": "5"}})
    # Then the counts add them all up
    assert state.event_counts() == {"activities.added": 45, "users.fully_synced": 1}
    # And each group has a counter of its own, and the groups use most of the shards
    shards = {count_key("activities.added", group)["pk"]["S"] for group in groups}
    assert len({str(count_key("activities.added", group)) for group in groups}) == len(groups)
    assert len(shards) >= COUNT_SHARDS // 2


def test_a_record_that_counted_before_an_upgrade_and_is_retried_after_it_is_counted_once(table: str) -> None:
    client = boto3.client("dynamodb")
    # Given a group's counter as the running release left it (in the group's shard, 13 for this group)
    # by a record that counted its event and then failed before archiving it
    group = "account:acc-upgraded-0"
    client.put_item(TableName=table, Item={
        "pk": {"S": "COUNTS#13"}, "sk": {"S": f"EVENT#activities.added#{group}"}, "count": {"N": "1"},
        "event": {"S": "activities.added"}, "group_id": {"S": group}, "last_key": {"S": "k1"},
        "last_processed_at": {"S": "t"}, "lookup": {"S": f"COUNTERS#{group}"}})
    state = SyncStateStore(table, client)
    # When the record is retried by the new release, and the group's next event comes
    assert archive(state, "k1", group=group) is True
    assert state.event_counts() == {"activities.added": 1}
    assert archive(state, "k2", group=group) is True
    # Then the retried event is counted once, and the group's counter goes on from where it was
    assert state.event_counts() == {"activities.added": 2}
    assert state.counter_keys(group) == [{"pk": {"S": "COUNTS#13"}, "sk": {"S": f"EVENT#activities.added#{group}"}}]


def test_counters_stay_in_the_documented_shards_an_operator_queries(table: str) -> None:
    # docs/sync.md: COUNTS#<nn>, nn 00..15 (an operator queries one shard by hand)
    shards = {count_key("activities.added", f"account:a{i}")["pk"]["S"] for i in range(300)}
    assert shards == {f"COUNTS#{n:02d}" for n in range(16)}
