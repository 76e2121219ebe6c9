"""The sync-state table (moto, from template.yaml): account status that never downgrades,
availability ordered by receive time, user records, and the archive that counts each event once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from argyle_pipeline.aws import sync_state_store
from argyle_pipeline.aws.sync_state_store import SyncStateStore, account_shard, event_key
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


class ThrottledReads:
    """A DynamoDB client whose first `rounds` BatchGetItem calls read nothing and hand every key
    back as UnprocessedKeys, as DynamoDB does when it throttles a batch read (moto never does)."""

    def __init__(self, client: Any, rounds: int) -> None:
        self._client, self.rounds, self.batch_reads = client, rounds, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.batch_reads += 1
        if self.batch_reads <= self.rounds:
            return {"Responses": {}, "UnprocessedKeys": RequestItems}
        return self._client.batch_get_item(RequestItems=RequestItems)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's back-off waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(sync_state_store, "time", SimpleNamespace(sleep=recorded.append))
    return recorded


def test_throttled_account_state_reads_are_retried_after_a_growing_capped_wait(state: SyncStateStore,
                                                                              waits: list[float]):
    # Given two accounts with state, and DynamoDB throttling the first 7 batch reads
    state.mark_fully_synced("acc-a", USER, "t")
    state.mark_partially_synced("acc-b", USER, 7, "t")
    throttled = ThrottledReads(boto3.client("dynamodb"), rounds=7)
    # When the health check reads their states
    states = SyncStateStore(state.table_name, throttled).account_states(["acc-a", "acc-b"])
    # Then the eighth read returns both, after waits that double from 0.1 s and stop growing at 2 s
    assert sorted(s["account_id"] for s in states) == ["acc-a", "acc-b"]
    assert throttled.batch_reads == 8
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_account_states_still_unread_after_eight_reads_fail_loudly(state: SyncStateStore, waits: list[float]):
    # Given DynamoDB throttling every batch read
    state.mark_fully_synced("acc-a", USER, "t")
    throttled = ThrottledReads(boto3.client("dynamodb"), rounds=100)
    # When the states are read, then the read fails (the caller retries) rather than return too few
    with pytest.raises(RuntimeError, match="left account states unread"):
        SyncStateStore(state.table_name, throttled).account_states(["acc-a"])
    assert throttled.batch_reads == 8 and len(waits) == 7


def test_forgetting_a_purge_removes_the_marker_so_the_account_starts_afresh(state: SyncStateStore):
    # Given an account purged after accounts.removed
    state.begin_purge(ACCOUNT, removed_received_at_ms=5, reason="accounts.removed", at="t1")
    state.finish_purge(ACCOUNT, removed_received_at_ms=5, reason="accounts.removed", purged_at="t2",
                       deleted={"activities": 3})
    assert state.purge_marker(ACCOUNT) is not None
    # When Argyle reports it connected again and the purge is forgotten
    state.forget_purge(ACCOUNT)
    # Then no marker is left to skip its messages, and no state of the old account either
    assert state.purge_marker(ACCOUNT) is None
    assert state.account_state(ACCOUNT) is None


@pytest.mark.parametrize("keys_of", ["archived_keys", "counter_keys"])
def test_a_groups_archive_and_counter_keys_come_at_most_limit_at_a_time(state: SyncStateStore, keys_of: str):
    # Given a group with three archived events of three kinds (three bodies, three counters)
    group = f"account:{ACCOUNT}"
    for i, event in enumerate(["activities.added", "activities.updated", "accounts.updated"]):
        state.archive_event(f"k{i}", event, b"{}", received_at_ms=i, processed_at="t", expires_at=2_000_000_000,
                            group_id=group)
    keys = getattr(state, keys_of)
    # When a purge takes them two at a time, then each step gets two, and all three are there
    assert len(keys(group, limit=2)) == 2
    assert len(keys(group)) == 3
    assert keys(group, limit=1)[0] in keys(group)


class ArchivedMeanwhile:
    """A DynamoDB client under which a concurrent copy of the same event archives it (counter and
    body) right after this copy's read found nothing: the race between the read and the put."""

    def __init__(self, client: Any, other: SyncStateStore, body: bytes) -> None:
        self._client, self._other, self._body, self.raced = client, other, body, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.get_item(**kwargs)
        if not self.raced and kwargs["Key"] == event_key("k-race"):
            self.raced = True
            assert self._other.archive_event("k-race", "activities.added", self._body, received_at_ms=1,
                                             processed_at="t", expires_at=2_000_000_000, group_id="account:a")
        return response


def test_an_event_archived_by_a_concurrent_copy_meanwhile_is_not_new_and_counted_once(state: SyncStateStore):
    # Given another copy of the event archiving it between this copy's read and its writes
    body = b'{"event": "activities.added"}'
    racing = ArchivedMeanwhile(boto3.client("dynamodb"), state, body)
    # When this copy archives it
    archived = SyncStateStore(state.table_name, racing).archive_event(
        "k-race", "activities.added", body, received_at_ms=1, processed_at="t", expires_at=2_000_000_000,
        group_id="account:a")
    # Then it reports the event as not new (no error: the record succeeds), and it is counted once
    assert racing.raced and archived is False
    assert state.event_counts() == {"activities.added": 1}
    assert state.archived_event("k-race")["body"] == body  # type: ignore[index]


def sync(state: SyncStateStore, at: str, *, user: str | None = USER, exact: bool = True,
         covered_from: str | None = None, covered_to: str | None = None) -> bool:
    return state.record_sync(ACCOUNT, user, at, event="activities.updated", covered_from=covered_from,
                             covered_to=covered_to, exact=exact)


@pytest.mark.parametrize("user", [USER, None])
def test_an_accounts_first_exact_copy_is_reported_once_whether_or_not_the_event_names_a_user(
        state: SyncStateStore, user: str | None):
    # Given an account synced without being found exact, then exact for the first time
    assert sync(state, "t1", user=user, exact=False) is False
    assert sync(state, "t2", user=user) is True
    # When it is found exact again
    again = sync(state, "t3", user=user)
    # Then that is not its first exact copy, and "data as of" moves on
    assert again is False
    assert state.account_state(ACCOUNT)["data_as_of"] == "t3"  # type: ignore[index]


@pytest.mark.parametrize(("covered_from", "covered_to"), [
    ("2024-01-01T00:00:00Z", None), (None, "2024-06-01T00:00:00Z"),
    ("2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z")])
def test_the_last_sync_keeps_whichever_bounds_of_the_window_it_covered(
        state: SyncStateStore, covered_from: str | None, covered_to: str | None):
    sync(state, "t", covered_from=covered_from, covered_to=covered_to)
    bounds = {"from": covered_from, "to": covered_to}
    assert state.account_state(ACCOUNT)["last_sync"] == {  # type: ignore[index]
        "event": "activities.updated", "at": "t", **{k: v for k, v in bounds.items() if v is not None}}


def test_a_sync_of_the_whole_account_records_no_window(state: SyncStateStore):
    sync(state, "t")
    assert state.account_state(ACCOUNT)["last_sync"] == {"event": "activities.updated", "at": "t"}  # type: ignore[index]


def test_a_failures_reason_is_noted_as_its_first_line_cut_to_300_characters(state: SyncStateStore):
    # When a record of the account fails with a long, multi-line reason
    noted = state.record_failure(ACCOUNT, event="activities.added", failed_at="t", reason="x" * 1000 + "\ntrace",
                                 attempts=3)
    # Then the health note keeps the first 300 characters of its first line
    assert noted is True
    failure = state.account_state(ACCOUNT)["last_failure"]  # type: ignore[index]
    assert failure == {"event": "activities.added", "at": "t", "reason": "x" * 300, "attempts": 3}


def test_a_failure_of_a_purged_account_is_not_noted(state: SyncStateStore):
    # Given a purged account
    state.begin_purge(ACCOUNT, removed_received_at_ms=5, reason="accounts.removed", at="t1")
    state.finish_purge(ACCOUNT, removed_received_at_ms=5, reason="accounts.removed", purged_at="t2", deleted={})
    # When one of its records fails, then nothing is written back into the marker, and the caller is told so
    assert state.record_failure(ACCOUNT, event="activities.added", failed_at="t", reason="boom", attempts=1) is False
    assert "last_failure" not in state.account_state(ACCOUNT)  # type: ignore[operator]


def test_account_lookups_stay_in_the_documented_shards_an_operator_queries(state: SyncStateStore):
    # docs/sync.md: an account's `lookup` is SHARD#00..SHARD#15 (the Lookups index an operator queries)
    accounts = [f"acc-{i}" for i in range(60)]
    for account in accounts:
        state.record_failure(account, event="activities.added", failed_at="t", reason="r", attempts=1)
    lookups = {account_shard(a) for a in accounts}
    stored = {s["lookup"] for s in state.account_states(accounts, ("lookup",))}
    assert stored == lookups and lookups == {f"SHARD#{n:02d}" for n in range(16)}
    assert sorted(state.account_ids()) == sorted(accounts)


class BatchWriteLimit:
    """A DynamoDB client that refuses a BatchWriteItem of more than 25 requests, as DynamoDB does
    (moto accepts any number)."""

    def __init__(self, client: Any) -> None:
        self._client, self.batch_writes = client, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        self.batch_writes += 1
        if sum(len(requests) for requests in RequestItems.values()) > 25:
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": "Too many items requested for the BatchWriteItem call"}},
                              "BatchWriteItem")
        return self._client.batch_write_item(RequestItems=RequestItems)


def test_a_purge_of_more_items_than_one_batch_write_takes_deletes_them_all(state: SyncStateStore):
    # Given 60 archived bodies of an account
    client = boto3.client("dynamodb")
    for i in range(60):
        client.put_item(TableName=state.table_name, Item={**event_key(f"k{i}"), "body": {"B": b"{}"}})
    limited = BatchWriteLimit(client)
    # When they are deleted, then DynamoDB takes them 25 at a time and none is left
    assert SyncStateStore(state.table_name, limited).delete_keys([event_key(f"k{i}") for i in range(60)]) == 60
    assert limited.batch_writes == 3
    assert all(state.archived_event(f"k{i}") is None for i in range(60))


def test_a_fully_synced_accounts_availability_follows_its_later_changes(state: SyncStateStore):
    # Given a fully synced account
    availability(state, 100, count=500, event="activities.fully_synced")
    state.mark_fully_synced(ACCOUNT, USER, "t")
    # When activities.added, received later, reports the new numbers
    recorded = availability(state, 200, count=501)
    # Then they replace the full sync's
    assert recorded is True
    assert state.account_state(ACCOUNT)["available_count"] == 501  # type: ignore[index]


def test_the_health_check_reads_every_accounts_state_past_a_hundred(state: SyncStateStore):
    # Given 201 accounts with state (BatchGetItem reads at most 100 keys a call)
    client = boto3.client("dynamodb")
    accounts = [f"acc-{i:03d}" for i in range(201)]
    for account in accounts:
        client.put_item(TableName=state.table_name, Item={
            **sync_state_store.account_key(account), "account_id": {"S": account}, "status": {"S": "fully_synced"}})
    # When their states are read, then every one comes back
    states = state.account_states(accounts)
    assert sorted(s["account_id"] for s in states) == accounts


def test_the_health_check_reads_only_the_attributes_it_asks_for(state: SyncStateStore):
    # Given an account with a full state
    state.mark_fully_synced(ACCOUNT, USER, "t")
    sync(state, "t")
    # When the health check reads two of its attributes, then only those come back; asked for none, all of them
    assert state.account_states([ACCOUNT], ("account_id", "data_as_of")) == [{"account_id": ACCOUNT,
                                                                               "data_as_of": "t"}]
    assert state.account_states([ACCOUNT]) == [state.account_state(ACCOUNT)]


class ThrottledWrites:
    """A DynamoDB client whose first `rounds` BatchWriteItem calls write nothing and hand every
    request back as UnprocessedItems, as DynamoDB does when it throttles a batch write."""

    def __init__(self, client: Any, rounds: int) -> None:
        self._client, self.rounds, self.batch_writes = client, rounds, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.batch_writes += 1
        if self.batch_writes <= self.rounds:
            return {"UnprocessedItems": RequestItems}
        return self._client.batch_write_item(RequestItems=RequestItems)


def test_throttled_purge_deletes_are_resent_after_a_growing_capped_wait(state: SyncStateStore, waits: list[float]):
    # Given an archived body, and DynamoDB throttling the first 7 batch writes
    client = boto3.client("dynamodb")
    client.put_item(TableName=state.table_name, Item={**event_key("k1"), "body": {"B": b"{}"}})
    throttled = ThrottledWrites(client, rounds=7)
    # When it is deleted, then the eighth write deletes it, after waits that double from 0.1 s and stop at 2 s
    assert SyncStateStore(state.table_name, throttled).delete_keys([event_key("k1")]) == 1
    assert throttled.batch_writes == 8 and state.archived_event("k1") is None
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_purge_deletes_still_unprocessed_after_eight_writes_fail_loudly(state: SyncStateStore, waits: list[float]):
    throttled = ThrottledWrites(boto3.client("dynamodb"), rounds=100)
    with pytest.raises(RuntimeError, match="left 1 deletes unprocessed"):
        SyncStateStore(state.table_name, throttled).delete_keys([event_key("k1")])
    assert throttled.batch_writes == 8 and len(waits) == 7


def test_a_reconnected_account_drops_its_old_error_code_and_keeps_the_new_scan_time(state: SyncStateStore):
    # Given an account Argyle reported failing, with an error code
    assert state.record_account_status(ACCOUNT, USER, event="accounts.failed", received_at_ms=1, updated_at="t",
                                       connection_status="error", error_code="auth_required") is True
    # When an older report is processed late, then it changes nothing
    assert state.record_account_status(ACCOUNT, USER, event="accounts.updated", received_at_ms=0, updated_at="t",
                                       connection_status="connected") is False
    # When it is reported connected again, with a scan time
    state.record_account_status(ACCOUNT, USER, event="accounts.updated", received_at_ms=2, updated_at="t",
                                connection_status="connected", scanned_at="2024-05-01T00:00:00Z")
    # Then the old error code is gone
    found = state.account_state(ACCOUNT)
    assert found is not None and found["connection_status"] == "connected" and "error_code" not in found
    assert found["scanned_at"] == "2024-05-01T00:00:00Z"


class OnePerPage:
    """A DynamoDB client whose Query and Scan pages hold one item, as DynamoDB's pages stop at 1 MB
    (moto's never do on these tables)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **kwargs: Any) -> dict[str, Any]:
        return self._client.query(**kwargs, Limit=1)

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        return self._client.scan(**kwargs, Limit=1)


def test_listings_read_every_page(state: SyncStateStore):
    # Given three accounts of a user, each with two archived events of its group (two counters in one shard)
    accounts = ["acc-p1", "acc-p2", "acc-p3"]
    for n, account in enumerate(accounts):
        state.mark_fully_synced(account, USER, "t")
        for i, event in enumerate(["activities.added", "activities.updated"]):
            state.archive_event(f"{account}-{i}", event, b"{}", received_at_ms=i, processed_at="t",
                                expires_at=2_000_000_000, group_id=f"account:{account}")
        state.archive_event(f"{account}-u", "users.fully_synced", b"{}", received_at_ms=n, processed_at="t",
                            expires_at=2_000_000_000, group_id="user:shared")
    # When everything is listed, one item a page
    paged = SyncStateStore(state.table_name, OnePerPage(boto3.client("dynamodb")))
    # Then nothing is missed past the first page
    assert sorted(paged.account_ids()) == accounts
    assert sorted(a["account_id"] for a in paged.accounts()) == accounts
    assert sorted(paged.user_accounts(USER)) == accounts
    assert len(paged.archived_keys("user:shared")) == 3
    assert paged.event_counts() == {"activities.added": 3, "activities.updated": 3, "users.fully_synced": 3}


class LaggingReads:
    """A DynamoDB client whose eventually consistent GetItem does not see this test's writes yet, as
    DynamoDB's may not within a second of them (moto's reads are always consistent)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        if not kwargs.get("ConsistentRead"):
            return {}
        return self._client.get_item(**kwargs)


@pytest.fixture
def lagging(state: SyncStateStore) -> SyncStateStore:
    return SyncStateStore(state.table_name, LaggingReads(boto3.client("dynamodb")))


def test_a_purge_just_begun_already_stops_the_accounts_messages(lagging: SyncStateStore):
    lagging.begin_purge(ACCOUNT, removed_received_at_ms=5, reason="accounts.removed", at="t1")
    assert lagging.purge_marker(ACCOUNT) == {"status": "purging", "removed_received_at_ms": 5,
                                             "purge_reason": "accounts.removed"}


def test_an_account_state_just_written_is_read_back(lagging: SyncStateStore):
    lagging.mark_fully_synced(ACCOUNT, USER, "t")
    assert lagging.account_state(ACCOUNT)["status"] == "fully_synced"  # type: ignore[index]


def test_an_event_archived_just_before_its_redelivery_is_counted_once(lagging: SyncStateStore):
    # Given an event archived, then another of its group
    assert archive_in(lagging, "k1") is True
    assert archive_in(lagging, "k2") is True
    # When the first is delivered again right away, then it is not new and not counted again
    assert archive_in(lagging, "k1") is False
    assert lagging.event_counts() == {"activities.added": 2}


def archive_in(state: SyncStateStore, key: str) -> bool:
    return state.archive_event(key, "activities.added", b"{}", received_at_ms=1, processed_at="t",
                               expires_at=2_000_000_000, group_id=f"account:{ACCOUNT}")
