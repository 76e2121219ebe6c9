"""What a duplicate is (docs/sync.md): every delivery of an Argyle body reaches the sync, which skips
a copy that an earlier run already covered and runs again for one that may announce a newer change.
The rules (`dispatch.run_unless_covered`, `needs_fresh_read`) with an in-memory Argyle, stores and
idempotency table, and a clock the test sets, so what a retry costs in Argyle calls is exact."""

from __future__ import annotations

from typing import Any

import pytest

from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync, needs_fresh_read, run_unless_covered
from argyle_pipeline.sync.messages import (
    ChangeBatch,
    Continuation,
    ParsedMessage,
    PurgeJob,
    ReconcileJob,
    SyncMessage,
    parse_message,
)
from tests.support.fake_argyle import FakeArgyle, range_of, webhook_body
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9


class MemoryIdempotency:
    """Powertools Idempotency as the sync handler uses it: the first call with a key runs and
    stores its outcome; later calls with that key return the stored outcome marked `duplicate`."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.runs: list[str] = []


class World:
    def __init__(self, changes_per_part: int = 500) -> None:
        self.now_ms = 0
        self.argyle = FakeArgyle()
        self.activities, self.state = MemoryActivities(), MemoryState()
        self.queue = MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue,
                                 SyncOptions(changes_per_part=changes_per_part), clock=lambda: self.now_ms / 1000)
        self.idempotency = MemoryIdempotency()

    def process(self, body: bytes, *, received_at_ms: int, at_ms: int) -> dict[str, Any]:
        """The sync handler's path for one SQS record: parse, then run unless covered."""
        self.now_ms = at_ms
        message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="c",
                              received_at_ms=received_at_ms)
        store = self.idempotency

        def run(parsed: ParsedMessage) -> dict[str, Any]:
            if parsed.run_key in store.records:
                return {**store.records[parsed.run_key], "duplicate": True}
            store.runs.append(parsed.run_key)
            outcome = self.sync.process(message, parsed, lambda: PLENTY).as_dict()
            store.records[parsed.run_key] = outcome
            return outcome

        return run_unless_covered(parse_message(message), message, run)

    def process_follow_ups(self, at_ms: int) -> None:
        """The sync's own messages queued meanwhile (change batches, continuations), in order."""
        while self.queue.sent:
            queued = self.queue.sent.pop(0)
            self.process(queued.body, received_at_ms=queued.received_at_ms, at_ms=at_ms)


def updated_body(ids: list[str], docs: list[dict[str, Any]]) -> bytes:
    start, end = range_of(docs)
    return webhook_body("activities.updated", account=ACCOUNT, user=USER, updated_from=start, updated_to=end,
                        updated_count=len(ids), updated_activities=ids, available_from=start,
                        available_to=end, available_count=len(docs))


def fully_synced_body(docs: list[dict[str, Any]]) -> bytes:
    start, end = range_of(docs)
    return webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, available_count=len(docs))


def test_argyle_retrying_one_delivery_within_seconds_costs_at_most_one_more_run():
    # Given an activities.updated of 3 activities, received at t=10 s and processed at once
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    body = updated_body([d["id"] for d in docs], docs)
    world.process(body, received_at_ms=10_000, at_ms=10_050)
    assert len(world.argyle.get_requests) == 3
    # When Argyle retries the same delivery three times within seconds (our answers were lost),
    # each copy arriving after that run began, all waiting in the queue together
    outcomes = [world.process(body, received_at_ms=received, at_ms=14_000 + n)
                for n, received in enumerate((11_000, 12_000, 13_000))]
    # Then the first copy ran once more (it may announce a newer change), and the others were
    # covered by that run: twice the reads in all, never once per copy (the documented bound)
    assert len(world.argyle.get_requests) == 2 * 3
    assert [o.get("duplicate", False) for o in outcomes] == [False, True, True]
    assert outcomes[0]["runs_before"] == 1
    assert len(world.idempotency.runs) == 2
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


def test_a_retry_waiting_in_the_queue_while_the_first_copy_is_processed_costs_nothing():
    # Given two deliveries of one body received at t=10 s and t=10.5 s, before the sync took the first
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    body = updated_body([d["id"] for d in docs], docs)
    # When the first runs at t=12 s (after both arrived) and the second follows it
    world.process(body, received_at_ms=10_000, at_ms=12_000)
    second = world.process(body, received_at_ms=10_500, at_ms=12_100)
    # Then the second is skipped: the run that began after it arrived read everything it announces
    assert second["duplicate"] is True
    assert len(world.argyle.get_requests) == 3


def test_a_listing_retried_after_its_run_began_is_listed_once_more_and_no_more():
    # Given a fully_synced of 450 activities (3 pages), processed at once
    world = World()
    docs = world.argyle.add(ACCOUNT, 450)
    body = fully_synced_body(docs)
    world.process(body, received_at_ms=10_000, at_ms=10_050)
    assert world.argyle.calls == 3
    # When Argyle retries it three times a minute later, the copies waiting together
    outcomes = [world.process(body, received_at_ms=70_000 + n, at_ms=80_000 + n) for n in range(3)]
    # Then one more listing ran (the copy may follow a reconnection), the others were covered by it
    assert world.argyle.calls == 2 * 3
    assert [o.get("duplicate", False) for o in outcomes] == [False, True, True]
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


def test_a_second_change_announced_by_identical_bytes_is_read_and_stored():
    # Given a synced account, an activity whose tips changed to 2.22, and Argyle's update synced
    world = World()
    docs = world.argyle.add(ACCOUNT, 2)
    world.process(fully_synced_body(docs), received_at_ms=1_000, at_ms=1_050)
    target = docs[0]["id"]
    world.argyle.update(ACCOUNT, target, tips="2.22")
    body = updated_body([target], docs)
    world.process(body, received_at_ms=10_000, at_ms=10_050)
    # When the tips change to 3.33 and Argyle's identical body arrives 8 seconds later
    world.argyle.update(ACCOUNT, target, tips="3.33")
    outcome = world.process(body, received_at_ms=18_050, at_ms=18_100)
    # Then it was read again and the copy holds the second change
    assert outcome["fetched"] == 1 and outcome["runs_before"] == 1
    assert world.activities.live(ACCOUNT)[target]["income"]["tips"] == "3.33"
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


def test_every_repeat_after_a_run_is_read_and_an_sqs_redelivery_of_one_runs_it_once():
    # Given one body delivered three times, each after the previous run (three real changes)
    world = World()
    docs = world.argyle.add(ACCOUNT, 1)
    target = docs[0]["id"]
    body = updated_body([target], docs)
    for n, tips in enumerate(("1.11", "2.22", "3.33")):
        world.argyle.update(ACCOUNT, target, tips=tips)
        world.process(body, received_at_ms=10_000 * (n + 1), at_ms=10_000 * (n + 1) + 50)
    assert world.activities.live(ACCOUNT)[target]["income"]["tips"] == "3.33"
    assert len(world.argyle.get_requests) == 3
    # When SQS delivers the third copy again (its deletion failed)
    again = world.process(body, received_at_ms=30_000, at_ms=40_000)
    # Then it finds its own run and stops: no fourth read
    assert again["duplicate"] is True
    assert len(world.argyle.get_requests) == 3
    assert world.idempotency.runs[1:] == [f"{world.idempotency.runs[0]}@10050",
                                          f"{world.idempotency.runs[0]}@20050"]


def test_a_repeat_reports_every_earlier_run_and_its_sqs_redelivery_reports_none():
    # Given one body run at t=10 s and run again for a copy received at t=20 s
    world = World()
    docs = world.argyle.add(ACCOUNT, 1)
    body = updated_body([docs[0]["id"]], docs)
    world.process(body, received_at_ms=10_000, at_ms=10_050)
    world.process(body, received_at_ms=20_000, at_ms=20_050)
    # When a third copy, received after both runs began, is processed
    third = world.process(body, received_at_ms=30_000, at_ms=30_050)
    # Then it ran, reporting the two runs before it (what the sync logs as processed again)
    assert not third.get("duplicate") and third["runs_before"] == 2
    # And when SQS delivers that copy again, it finds the run that covered it and reports no repeat
    # processed (nothing ran)
    again = world.process(body, received_at_ms=30_000, at_ms=40_000)
    assert again["duplicate"] is True and "runs_before" not in again
    assert len(world.argyle.get_requests) == 3


def test_a_repeat_too_large_for_one_run_rereads_every_id_through_its_own_follow_ups():
    # Given an activities.updated naming 5 activities, checked 2 per run, the rest in change
    # batches, all processed
    world = World(changes_per_part=2)
    docs = world.argyle.add(ACCOUNT, 5)
    world.process(fully_synced_body(docs), received_at_ms=1_000, at_ms=1_050)
    ids = [d["id"] for d in docs]
    body = updated_body(ids, docs)
    world.process(body, received_at_ms=10_000, at_ms=10_050)
    first_batches = [q.dedupe_key for q in world.queue.sent]
    world.process_follow_ups(at_ms=10_100)
    # When all 5 change again and Argyle's identical body arrives later
    for activity_id in ids:
        world.argyle.update(ACCOUNT, activity_id, tips="7.77")
    world.process(body, received_at_ms=20_000, at_ms=20_050)
    # Then the re-run's batches are keyed apart from the first run's (not taken for their
    # retries), and once they run every id holds the second change
    assert len(world.queue.sent) == len(first_batches) == 2
    assert not {q.dedupe_key for q in world.queue.sent} & set(first_batches)
    world.process_follow_ups(at_ms=20_100)
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert {doc["income"]["tips"] for doc in world.activities.live(ACCOUNT).values()} == {"7.77"}
    # And the body was archived and counted once
    assert world.state.counts["activities.updated"] == 1


def _copy_of(event: str) -> tuple[SyncMessage, Any]:
    data: dict[str, Any] = {"account": ACCOUNT, "user": USER}
    if event.startswith("users."):
        data = {"user": USER, "resource": {"id": USER}}
    message = SyncMessage(body=webhook_body(event, **data), group_id="g", correlation_id="c",
                          received_at_ms=5_000)
    return message, parse_message(message)


# docs/sync.md, "What a duplicate is": every Argyle webhook, v1 or v2, follows one rule; a copy
# received after the latest run of its body began is processed again.
@pytest.mark.parametrize("event", [
    "activities.updated", "gigs.updated", "activities.added", "gigs.added",
    "activities.removed", "gigs.removed", "activities.fully_synced", "gigs.fully_synced",
    "activities.partially_synced", "gigs.partially_synced", "users.fully_synced",
    "accounts.connected", "accounts.removed", "accounts.updated", "paystubs.added",
])
def test_every_webhook_kind_in_v1_and_v2_is_processed_again_only_when_received_after_a_run_began(event: str):
    message, parsed = _copy_of(event)
    # A copy received after the latest run began may be news...
    assert needs_fresh_read(parsed, message, {"started_at_ms": 1_000}) is True
    # ...while a copy received before it began is covered by it
    assert needs_fresh_read(parsed, message, {"started_at_ms": 5_001}) is False


@pytest.mark.parametrize("own", [
    Continuation(origin_dedupe_key="k", origin_event="activities.fully_synced", part=2, account=ACCOUNT,
                 cursor={"offset": "400"}),
    ChangeBatch(origin_dedupe_key="k", origin_event="activities.updated", part=1, account=ACCOUNT, ids=["a"]),
    ReconcileJob(account=ACCOUNT, request_id="scheduled-20000"),
    PurgeJob(account=ACCOUNT, request_id="erasure-0001", removed_received_at_ms=5_000),
], ids=lambda own: type(own).__name__)
def test_a_copy_of_the_syncs_own_message_is_never_run_again(own: Any):
    # A retried part re-sends the very same message (its key: origin or request, and part)
    message = SyncMessage(body=own.body(), group_id="g", correlation_id="c", received_at_ms=9_000)
    parsed = parse_message(message)
    assert parsed.is_continuation and parsed.idempotency_key == own.idempotency_key
    assert needs_fresh_read(parsed, message, {"started_at_ms": 1_000}) is False
