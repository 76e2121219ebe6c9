"""A page's batches go to DynamoDB several at once; a failure in one still fails the page, the
others are not left half-sent, and nothing keeps running after the call."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore, DynamoDBIncomplete
from tests.support.fake_argyle import make_activity


class RecordingClient:
    """BatchGetItem finds nothing; BatchWriteItem records each batch, and throttles the batch that
    holds `fail_id` (once botocore's retries would be spent)."""

    def __init__(self, fail_id: str | None = None, *, expect_overlap: bool = True) -> None:
        self.fail_id = fail_id
        self.expect_overlap = expect_overlap
        self.written: list[str] = []
        self.in_flight = self.most_in_flight = self.calls = 0
        self._lock = threading.Lock()
        self._overlap = threading.Barrier(2, timeout=5)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        (requests,) = RequestItems.values()
        ids = [r["PutRequest"]["Item"]["activity_id"]["S"] for r in requests]
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.calls += 1
            first_two = self.calls <= 2
        try:
            if self.expect_overlap and first_two:
                with contextlib.suppress(threading.BrokenBarrierError):
                    self._overlap.wait()  # proves two batches are in DynamoDB at the same time
            if self.fail_id in ids:
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                                  "BatchWriteItem")
            with self._lock:
                self.written.extend(ids)
            return {"UnprocessedItems": {}}
        finally:
            with self._lock:
                self.in_flight -= 1


def _page(n: int) -> list[Activity]:
    return [Activity.from_api(make_activity("acc-1", i)) for i in range(n)]


def test_a_pages_batches_are_written_at_the_same_time():
    client = RecordingClient()
    page = _page(200)
    result = ActivityStore("activities", client, concurrency=4).upsert_many(page, "2026-11-29T00:00:00Z")
    assert result.written == 200 and sorted(client.written) == sorted(a.id for a in page)
    assert 2 <= client.most_in_flight <= 4


def test_one_batch_refused_fails_the_page_after_the_others_are_sent_and_leaves_no_thread():
    page = _page(200)
    client = RecordingClient(fail_id=page[60].id)  # in the third batch of 25
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ClientError, match="slow down"):
        ActivityStore("activities", client, concurrency=4).upsert_many(page, "2026-11-29T00:00:00Z")
    # The other seven batches went out whole (a retry of the page writes them again, idempotently).
    assert len(client.written) == 175 and page[60].id not in client.written
    assert {t.ident for t in threading.enumerate()} <= before


def test_one_at_a_time_when_asked():
    client = RecordingClient(expect_overlap=False)
    ActivityStore("activities", client, concurrency=1).upsert_many(_page(100), "2026-11-29T00:00:00Z")
    assert client.most_in_flight == 1 and len(client.written) == 100


class LimitedClient:
    """DynamoDB's request limits: at most 100 keys per BatchGetItem and 25 writes per BatchWriteItem
    (a larger request is refused whole). Nothing is stored yet."""

    def __init__(self) -> None:
        self.keys_read: list[int] = []
        self.written = 0
        self._lock = threading.Lock()

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (request,) = RequestItems.values()
        if len(request["Keys"]) > 100:
            refusal = {"Code": "ValidationException", "Message": "Too many items requested for the BatchGetItem call"}
            raise ClientError({"Error": refusal}, "BatchGetItem")
        with self._lock:
            self.keys_read.append(len(request["Keys"]))
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        (requests,) = RequestItems.values()
        if len(requests) > 25:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "Too many items"}}, "BatchWriteItem")
        with self._lock:
            self.written += len(requests)
        return {"UnprocessedItems": {}}


@pytest.mark.parametrize("size", [101, 250])
def test_a_page_of_more_than_100_activities_is_checked_and_written_within_dynamodbs_limits(size: int):
    client = LimitedClient()
    result = ActivityStore("activities", client).upsert_many(_page(size), "2026-11-29T00:00:00Z")
    assert result.written == client.written == size
    assert sorted(client.keys_read, reverse=True) == [100] * (size // 100) + [size % 100] * (size % 100 > 0)


class ThrottledClient:
    """DynamoDB under load: every BatchWriteItem leaves all of its items unprocessed."""

    def __init__(self) -> None:
        self.write_calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        self.write_calls += 1
        return {"UnprocessedItems": RequestItems}


def test_a_throttled_batch_is_tried_8_times_over_about_7_seconds_then_fails_its_record():
    # The defaults (DYNAMODB_MAX_ROUNDS is 8 too): waits doubling from 0.1 s, never more than 2 s
    # (here the longest wait full jitter can draw); then the record fails and SQS retries it.
    client, sleeps = ThrottledClient(), list[float]()
    store = ActivityStore("activities", client, sleep=sleeps.append, rand=lambda: 1.0)
    with pytest.raises(DynamoDBIncomplete, match="BatchWriteItem left 3 items unprocessed after 8 rounds"):
        store.upsert_many(_page(3), "2026-11-29T00:00:00Z")
    assert client.write_calls == store.write_calls == 8
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


class GatedClient:
    """Holds the first calls in DynamoDB until `expected` of them are there at once (or 2 s pass),
    then a moment longer to see whether more arrive: the most that were in flight together."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = self.most_in_flight = self.written = 0
        self._released = False
        self._cond = threading.Condition()

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        (requests,) = RequestItems.values()
        with self._cond:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._cond.notify_all()
            if not self._released:
                self._cond.wait_for(lambda: self.in_flight >= self.expected, timeout=2)
                self._cond.wait_for(lambda: self.in_flight > self.expected, timeout=0.1)
                self._released = True
            self.written += len(requests)
            self.in_flight -= 1
        return {"UnprocessedItems": {}}


def test_a_pages_batches_go_to_dynamodb_four_at_a_time_by_default():
    client = GatedClient(expected=4)
    assert ActivityStore("activities", client).upsert_many(_page(200), "2026-11-29T00:00:00Z").written == 200
    assert client.most_in_flight == 4 and client.written == 200


@pytest.mark.parametrize("concurrency", [1, 0])
def test_a_store_asked_for_one_batch_at_a_time_never_sends_two_together(concurrency: int):
    client = GatedClient(expected=1)
    ActivityStore("activities", client, concurrency=concurrency).upsert_many(_page(100), "2026-11-29T00:00:00Z")
    assert client.most_in_flight == 1 and client.written == 100


class SlowTable:
    """DynamoDB shedding load: each batch call processes only the first key or item of its request
    and leaves the rest unprocessed. Holds the items written (plain attribute-value form)."""

    def __init__(self, items: dict[str, dict[str, Any]] | None = None, *, gets_forever: bool = False) -> None:
        self.items = dict(items or {})
        self.gets_forever = gets_forever
        self.gets = self.writes = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.gets += 1
        ((table, request),) = RequestItems.items()
        first, rest = request["Keys"][0], request["Keys"][1:]
        if self.gets_forever:
            first, rest = None, request["Keys"]
        found = [self.items[first["activity_id"]["S"]]] if first and first["activity_id"]["S"] in self.items else []
        unprocessed = {table: {**request, "Keys": rest}} if rest else {}
        return {"Responses": {table: found}, "UnprocessedKeys": unprocessed}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        self.writes += 1
        ((table, requests),) = RequestItems.items()
        item = requests[0]["PutRequest"]["Item"]
        self.items[item["activity_id"]["S"]] = item
        return {"UnprocessedItems": {table: requests[1:]} if requests[1:] else {}}


def test_versions_left_unread_under_load_are_read_again_before_anything_is_written():
    page = _page(4)
    stored = {  # a copy newer than the page's, and a tombstone (no version at all)
        page[1].id: {"account_id": {"S": "acc-1"}, "activity_id": {"S": page[1].id}, "version": {"N": str(10**18)}},
        page[2].id: {"account_id": {"S": "acc-1"}, "activity_id": {"S": page[2].id}, "removed_at": {"S": "x"}},
    }
    table, sleeps = SlowTable(stored), list[float]()
    result = ActivityStore("activities", table, sleep=sleeps.append, rand=lambda: 1.0).upsert_many(page, "t")
    assert (result.stale, result.removed, result.created, result.written) == (1, 1, 2, 2)
    assert table.gets == 4 and table.writes == 2  # one key per read, then one item per write
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.1])
    assert {page[0].id, page[3].id} <= set(table.items) and "removed_at" in table.items[page[2].id]


def test_versions_dynamodb_never_reads_fail_the_record_after_8_rounds_without_writing():
    table = SlowTable(gets_forever=True)
    with pytest.raises(DynamoDBIncomplete, match="BatchGetItem left keys unprocessed after 8 rounds"):
        ActivityStore("activities", table, sleep=lambda _: None).upsert_many(_page(3), "t")
    assert (table.gets, table.writes) == (8, 0)
