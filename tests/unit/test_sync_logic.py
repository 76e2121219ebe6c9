"""The sync's rules (argyle_pipeline.sync.dispatch) with an in-memory Argyle, stores and queue."""

from __future__ import annotations

import base64
import threading
from typing import Any

import pytest

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.argyle.client import ArgyleUnavailable
from argyle_pipeline.argyle.webhook_events import MalformedWebhook
from argyle_pipeline.aws.event_queue import QueuedEvent, dedupe_key
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync, needs_fresh_read
from argyle_pipeline.sync.messages import (
    CONTINUATION_EVENT,
    Continuation,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from tests.support.fake_argyle import FakeArgyle, range_of, unavailable, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9  # remaining ms: never short of time


class World:
    def __init__(self, page_limit: int = 200, margin_ms: int = 120_000, whole_account: bool = True,
                 changes_per_part: int = 500) -> None:
        self.argyle = FakeArgyle(page_limit=page_limit)
        self.activities, self.state, self.queue = MemoryActivities(), MemoryState(), MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue,
                                 SyncOptions(continuation_margin_ms=margin_ms,
                                             full_sync_whole_account=whole_account,
                                             changes_per_part=changes_per_part))

    def deliver(self, body: bytes, remaining_ms: int = PLENTY, received_at_ms: int = 1,
                group: str = f"account:{ACCOUNT}") -> dict[str, Any]:
        message = SyncMessage(body=body, group_id=group, correlation_id="corr",
                              received_at_ms=received_at_ms)
        return self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()

    def deliver_queued(self, event: QueuedEvent, remaining_ms: int = PLENTY) -> dict[str, Any]:
        message = message_from_sqs_record(record_for(event))
        return self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()


def fully_synced(docs: list[dict[str, Any]]) -> bytes:
    start, end = range_of(docs)
    return webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, available_count=len(docs))


def test_fully_synced_lists_the_account_page_by_page_and_records_the_account():
    # Given an account with 450 activities at Argyle, 200 per page
    world = World()
    docs = world.argyle.add(ACCOUNT, 450)
    # When its fully_synced webhook is processed
    outcome = world.deliver(fully_synced(docs))
    # Then the whole account (no date filter: undated activities too) was listed once, in 3 pages,
    # and every activity stored exactly
    start, _ = range_of(docs)
    assert world.argyle.list_requests == [(ACCOUNT, None, None, None)]
    assert outcome["pages"] == 3 and outcome["upserted"] == 450
    assert world.activities.upsert_many_calls == [200, 200, 50]
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    state = world.state.accounts[ACCOUNT]
    assert state["status"] == "fully_synced" and state["available_count"] == 450
    assert state["available_from"] == start and state["user_id"] == USER
    assert world.state.counts == {"activities.fully_synced": 1}


def test_fully_synced_can_list_just_the_webhooks_range():
    # Given the option to list only [available_from, available_to]
    world = World(whole_account=False)
    docs = world.argyle.add(ACCOUNT, 5)
    # When fully_synced is processed
    world.deliver(fully_synced(docs))
    # Then exactly the webhook's range was passed to the filters
    assert world.argyle.list_requests == [(ACCOUNT, *range_of(docs), None)]


def test_fully_synced_with_no_activities_and_null_dates_is_valid():
    # Given Argyle's fully_synced for an empty account: count 0, dates null
    world = World()
    body = webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=None,
                        available_to=None, available_count=0)
    # When it is processed
    outcome = world.deliver(body)
    # Then the (unbounded) listing found nothing and the account is fully synced with 0
    assert world.argyle.list_requests == [(ACCOUNT, None, None, None)]
    assert outcome["upserted"] == 0
    state = world.state.accounts[ACCOUNT]
    assert state["status"] == "fully_synced" and state["available_count"] == 0
    assert state["available_from"] is None


def test_a_short_budget_continues_after_one_page_and_the_continuation_finishes_the_job():
    # Given 500 activities, pages of 200, and an invocation with less time left than the margin
    world = World(margin_ms=120_000)
    docs = world.argyle.add(ACCOUNT, 500)
    webhook = fully_synced(docs)
    # When the webhook is processed with 60 s left
    first = world.deliver(webhook, remaining_ms=60_000)
    # Then one page was stored and a continuation queued in the account's group, carrying the cursor
    assert first["action"] == "continued" and first["pages"] == 1 and first["continuation_part"] == 1
    (queued,) = world.queue.sent
    assert queued.group_id == f"account:{ACCOUNT}" and queued.event_name == CONTINUATION_EVENT
    continuation = parse_message(message_from_sqs_record(record_for(queued))).data
    assert isinstance(continuation, Continuation)
    assert continuation.cursor == {"offset": "200"} and continuation.origin_dedupe_key == dedupe_key(webhook)
    assert queued.dedupe_key == continuation.idempotency_key
    assert ACCOUNT not in world.state.accounts  # not fully synced until the last page is in
    # When the continuations are processed in turn (each also short of time)
    while world.queue.sent:
        outcome = world.deliver_queued(world.queue.sent.pop(0), remaining_ms=60_000)
    # Then every page was fetched exactly once, everything is stored, and the account is synced
    assert outcome["action"] == "synced" and outcome["part"] == 2
    assert [r[3] for r in world.argyle.list_requests] == [None, {"offset": "200"}, {"offset": "400"}]
    assert {r[:3] for r in world.argyle.list_requests} == {(ACCOUNT, None, None)}
    assert world.argyle.calls == 3
    assert world.activities.upsert_many_calls == [200, 200, 100]
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"
    assert world.state.counts == {"activities.fully_synced": 1}  # continuations are not webhooks


def test_a_part_with_exactly_the_margin_left_lists_to_the_end_without_a_continuation():
    # Given 500 activities, pages of 200, and an invocation with exactly the margin left
    world = World(margin_ms=120_000)
    docs = world.argyle.add(ACCOUNT, 500)
    # When the webhook is processed
    outcome = world.deliver(fully_synced(docs), remaining_ms=120_000)
    # Then it was not short of time: all 3 pages in this invocation, nothing handed on
    assert outcome["action"] == "synced" and outcome["pages"] == 3 and world.queue.sent == []
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


@pytest.mark.parametrize("group", [f"user:{USER}", ""], ids=["another group", "no group"])
def test_a_listings_continuation_is_queued_in_its_own_message_group(group: str):
    # Given a fully_synced received in a group other than the account's (the receiver uses the
    # user's when the account id cannot be a group id), or with no group at all
    world = World()
    docs = world.argyle.add(ACCOUNT, 300)
    # When it is processed short of time
    outcome = world.deliver(fully_synced(docs), remaining_ms=1, group=group)
    # Then its continuation is queued behind it in its own group (the account's when it had none),
    # so the listing stays in order with that group's later messages
    assert outcome["action"] == "continued"
    assert [q.group_id for q in world.queue.sent] == [group or f"account:{ACCOUNT}"]


def test_a_retried_part_queues_the_identical_continuation():
    # Given a part that ran short of time once
    world = World()
    docs = world.argyle.add(ACCOUNT, 300)
    world.deliver(fully_synced(docs), remaining_ms=1)
    # When the same message is processed again (its completion was not recorded)
    world.deliver(fully_synced(docs), remaining_ms=1)
    # Then both runs queued byte-identical continuations, which SQS and idempotency collapse
    first, second = world.queue.sent
    assert first.body == second.body and first.dedupe_key == second.dedupe_key


def test_partially_synced_records_days_and_never_downgrades_a_fully_synced_account():
    # Given an account already fully synced
    world = World()
    docs = world.argyle.add(ACCOUNT, 10)
    world.deliver(fully_synced(docs), received_at_ms=2)
    # When a partially_synced delivered late is processed
    start, end = range_of(docs[-3:])
    body = webhook_body("activities.partially_synced", account=ACCOUNT, user=USER, days_synced=7,
                        available_from=start, available_to=end, available_count=10)
    world.deliver(body, received_at_ms=1)
    # Then its range was listed, days_synced recorded, and the status is still fully_synced
    assert world.argyle.list_requests[-1] == (ACCOUNT, start, end, None)
    state = world.state.accounts[ACCOUNT]
    assert state["status"] == "fully_synced" and state["days_synced"] == 7
    assert state["available_from"] == range_of(docs)[0]


def test_added_lists_the_added_range_and_updates_availability():
    # Given a synced account that then gains 5 activities
    world = World()
    docs = world.argyle.add(ACCOUNT, 20)
    world.deliver(fully_synced(docs), received_at_ms=1)
    new = world.argyle.add(ACCOUNT, 5, first=100)
    added_from, added_to = range_of(new)
    body = webhook_body("activities.added", account=ACCOUNT, user=USER, added_from=added_from,
                        added_to=added_to, added_count=5, available_from=range_of(docs)[0],
                        available_to=added_to, available_count=25)
    # When activities.added is processed
    outcome = world.deliver(body, received_at_ms=2)
    # Then only the added range was listed and the account's availability follows the event
    assert world.argyle.list_requests[-1] == (ACCOUNT, added_from, added_to, None)
    assert outcome["upserted"] == 5
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    state = world.state.accounts[ACCOUNT]
    assert state["available_count"] == 25 and state["available_to"] == added_to
    assert state["last_event"] == "activities.added"


class BarrierArgyle(FakeArgyle):
    """get_activity waits until `parties` calls are in flight together (proves the concurrency)
    and tracks the most in flight at once (proves the bound)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def get_activity(self, activity_id: str) -> Activity:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.barrier.wait()
            return super().get_activity(activity_id)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_updated_fetches_ids_with_bounded_concurrency_and_removes_the_ones_gone():
    # Given 8 stored activities, 5 of them updated at Argyle and one of those removed since
    world = World()
    argyle = BarrierArgyle(parties=3)  # fails (BrokenBarrierError) unless 3 fetch at once
    world.sync.ctx.argyle, world.sync.ctx.fetchers = argyle, [argyle] * 3
    docs = argyle.add(ACCOUNT, 8)
    world.deliver(fully_synced(docs))
    ids = [d["id"] for d in docs[:6]]
    for activity_id in ids[:5]:
        argyle.update(ACCOUNT, activity_id)
    argyle.remove(ACCOUNT, ids[5])
    body = webhook_body("activities.updated", account=ACCOUNT, user=USER, updated_activities=ids,
                        updated_count=6, available_from=None, available_to=None, available_count=7)
    # When activities.updated is processed with 3 fetchers
    outcome = world.deliver(body)
    # Then the ids were fetched 3 at a time (never more), updates stored, the 404 removed
    assert argyle.max_in_flight == 3
    assert sorted(argyle.get_requests) == sorted(ids)
    assert outcome["fetched"] == 5 and outcome["upserted"] == 5 and outcome["removed"] == 1
    assert world.activities.upsert_one_calls == 5
    assert world.activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    # and the account's state follows the event (what Argyle now says is available)
    state = world.state.accounts[ACCOUNT]
    assert state["available_count"] == 7 and state["last_event"] == "activities.updated"


@pytest.mark.parametrize("field", ["removed_activities", "removed_gigs"])
def test_removed_tombstones_each_id_argyle_confirms_gone_whichever_name_the_list_has(field: str):
    # Given a synced account, two of whose activities Argyle then removes
    world = World()
    docs = world.argyle.add(ACCOUNT, 6)
    world.deliver(fully_synced(docs))
    gone = [docs[0]["id"], docs[3]["id"]]
    for activity_id in gone:
        world.argyle.remove(ACCOUNT, activity_id)
    body = webhook_body("activities.removed", account=ACCOUNT, user=USER, removed_count=2,
                        available_from=None, available_to=None, available_count=4, **{field: gone})
    # When activities.removed is processed
    outcome = world.deliver(body)
    # Then Argyle was asked about each id, both answered 404 and were removed in one batch
    assert sorted(world.argyle.get_requests) == sorted(gone)
    assert outcome["removed"] == 2 and world.activities.remove_calls == [gone]
    # and the account's state follows the event
    state = world.state.accounts[ACCOUNT]
    assert state["available_count"] == 4 and state["last_event"] == "activities.removed"
    assert outcome["contradicted"] == 0
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


def updated_naming(ids: list[str]) -> bytes:
    return webhook_body("activities.updated", account=ACCOUNT, user=USER, updated_activities=ids,
                        updated_count=len(ids), available_from=None, available_to=None, available_count=len(ids))


def test_a_large_updated_event_records_the_accounts_last_sync_when_its_last_change_batch_is_applied():
    # Given a synced account, 5 of whose activities change, named by one activities.updated that is
    # checked 2 ids per run (the rest queued as change batches)
    world = World(changes_per_part=2)
    clock = [1_000.0]
    world.sync.ctx.clock = lambda: clock[0]
    docs = world.argyle.add(ACCOUNT, 5)
    world.deliver(fully_synced(docs))
    ids = [d["id"] for d in docs]
    for activity_id in ids:
        world.argyle.update(ACCOUNT, activity_id, tips="5.55")
    world.deliver(updated_naming(ids))
    batches, world.queue.sent = list(world.queue.sent), []
    assert len(batches) == 2
    # When its change batches are applied an hour later
    clock[0] = 4_600.0
    for batch in batches:
        world.deliver_queued(batch)
    # Then every change is stored, and the account's last successful sync (what its health reports)
    # is the time the batches were applied, not the first part's
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert world.state.accounts[ACCOUNT]["last_sync"] == {"event": "activities.updated",
                                                          "at": "1970-01-01T01:16:40.000Z"}


@pytest.mark.parametrize("group", [f"user:{USER}", ""], ids=["another group", "no group"])
def test_the_change_batches_of_a_large_updated_event_are_queued_in_its_own_message_group(group: str):
    # Given an activities.updated naming 5 ids, checked 2 per run, received in a group other than the
    # account's (the receiver uses the user's when the account id cannot be a group id), or with no
    # group at all (a record from outside the FIFO queue)
    world = World(changes_per_part=2)
    docs = world.argyle.add(ACCOUNT, 5)
    # When it is processed
    outcome = world.deliver(updated_naming([d["id"] for d in docs]), group=group)
    # Then its 2 change batches are queued behind it, in its own group (the account's when it had none),
    # so they stay in order with that group's later messages
    assert outcome["changes_parts"] == 2
    assert [q.group_id for q in world.queue.sent] == [group or f"account:{ACCOUNT}"] * 2


def test_an_updated_event_checked_in_one_run_records_the_accounts_last_sync():
    # Given a synced account, one of whose activities changes
    world = World()
    clock = [1_000.0]
    world.sync.ctx.clock = lambda: clock[0]
    docs = world.argyle.add(ACCOUNT, 3)
    world.deliver(fully_synced(docs))
    world.argyle.update(ACCOUNT, docs[0]["id"], tips="4.44")
    # When its activities.updated is processed an hour later (all its ids in this one run)
    clock[0] = 4_600.0
    outcome = world.deliver(updated_naming([docs[0]["id"]]))
    # Then the change is stored, and the account's last successful sync is this one
    assert outcome["completed"] and world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert world.state.accounts[ACCOUNT]["last_sync"] == {"event": "activities.updated",
                                                          "at": "1970-01-01T01:16:40.000Z"}


def test_the_change_batches_of_a_large_updated_event_are_numbered_on_from_its_own_part():
    # Given an activities.updated naming 5 ids, checked 2 per run
    world = World(changes_per_part=2)
    docs = world.argyle.add(ACCOUNT, 5)
    # When it is processed (part 0: the webhook itself) and its change batches after it
    first = world.deliver(updated_naming([d["id"] for d in docs]))
    batches = [world.deliver_queued(q) for q in list(world.queue.sent)]
    # Then the batches are parts 1 and 2, as an operator following the event's parts expects
    assert first["part"] == 0 and [b["part"] for b in batches] == [1, 2]


def test_users_fully_synced_stores_the_resource_as_sent():
    # Given a users.fully_synced webhook with a resource (and a field the model does not know)
    world = World()
    resource = {"id": USER, "data_providers_connected": ["mypayroll_platform"],
                "employers_connected": ["Whole Goods"], "external_metadata": {}, "x_extra": 1,
                "created_at": "2022-09-29T19:55:43.166095Z"}
    # When it is processed
    world.deliver(webhook_body("users.fully_synced", user=USER, resource=resource))
    # Then the user's record holds the resource exactly, and Argyle was not called
    assert world.state.users[USER]["resource"] == resource
    assert world.argyle.calls == 0


@pytest.mark.parametrize("event", ["paystubs.added", "payouts.added", "brand.new"])
def test_other_events_are_archived_and_counted_without_syncing(event: str):
    # Given an event the sync has nothing to do for
    world = World()
    body = webhook_body(event, account=ACCOUNT, user=USER)
    # When it is processed
    outcome = world.deliver(body)
    # Then it is archived under its body's hash and counted; Argyle is not called
    assert outcome["action"] == "archived" and outcome["archived"] is True
    assert world.state.archive[dedupe_key(body)]["body"] == body
    assert world.state.counts == {event: 1}
    assert world.argyle.calls == 0


def test_an_archived_event_is_kept_for_the_archive_period_from_when_it_was_processed():
    # Given a sync whose clock reads t=1000 s
    world = World()
    world.sync.ctx.clock = lambda: 1_000.0
    body = webhook_body("paystubs.added", account=ACCOUNT, user=USER)
    # When an event is processed
    world.deliver(body)
    # Then its archived copy expires (DynamoDB's TTL) the archive period after that, not before
    period = world.sync.ctx.options.event_archive_seconds
    assert world.state.archive[dedupe_key(body)]["expires_at"] == 1_000 + period


def test_argyle_unavailable_propagates_and_nothing_is_recorded():
    # Given Argyle answering 429 until the client gives up
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    world.argyle.fail_next = [unavailable()]
    # When the webhook is processed, Then the error reaches the caller (so SQS retries)
    with pytest.raises(ArgyleUnavailable):
        world.deliver(fully_synced(docs))
    # And nothing claims the account was synced or the event processed
    assert world.state.accounts == {} and world.state.archive == {}


def test_a_known_event_without_its_account_is_malformed():
    body = webhook_body("activities.added", user=USER)
    message = SyncMessage(body=body, group_id="g", correlation_id="c", received_at_ms=0)
    with pytest.raises(MalformedWebhook):
        parse_message(message)


def test_a_base64_record_is_decoded_to_the_exact_bytes():
    # Given a body SQS could not carry as text, queued base64 (as the receiver does)
    body = '{"event": "accounts.updated", "data": {"account": "a", "note": "\ufffe"}}'.encode()
    record = record_for(QueuedEvent(body=body, event_name="accounts.updated", group_id="account:a",
                                    dedupe_key=dedupe_key(body), correlation_id="corr-1", received_at_ms=42))
    assert record["messageAttributes"]["body_encoding"]["stringValue"] == "base64"
    assert record["body"] == base64.b64encode(body).decode()
    # When it is read back
    message = message_from_sqs_record(record)
    # Then the bytes, group, correlation id and receive time are the receiver's
    assert message.body == body and message.group_id == "account:a"
    assert message.correlation_id == "corr-1" and message.received_at_ms == 42


def _updated_parsed(body: bytes) -> tuple[SyncMessage, Any]:
    message = SyncMessage(body=body, group_id="g", correlation_id="c", received_at_ms=1_000)
    return message, parse_message(message)


def test_an_identical_updated_body_received_after_the_earlier_read_is_read_again():
    # Given an activities.updated body whose earlier run started reading at t=900 and t=1000
    body = webhook_body("activities.updated", account=ACCOUNT, updated_activities=["a"])
    message, parsed = _updated_parsed(body)
    # Then a copy received at t=1000 may announce a newer change (read again) unless the read
    # started after it was received
    assert needs_fresh_read(parsed, message, {"started_at_ms": 900}) is True
    assert needs_fresh_read(parsed, message, {"started_at_ms": 1_001}) is False


def test_a_removal_received_after_the_earlier_run_is_confirmed_again():
    # Every webhook kind follows one rule (docs/sync.md, "What a duplicate is"; every kind in
    # tests/unit/test_duplicate_deliveries.py)
    body = webhook_body("activities.removed", account=ACCOUNT, removed_activities=["a"])
    message, parsed = _updated_parsed(body)
    assert needs_fresh_read(parsed, message, {"started_at_ms": 0}) is True
    assert needs_fresh_read(parsed, message, {"started_at_ms": 1_001}) is False


def test_a_copy_received_in_the_millisecond_its_earlier_run_began_is_read_again():
    # Given an activities.updated body received at t=1000 ms, whose earlier run began at t=1000 ms
    body = webhook_body("activities.updated", account=ACCOUNT, updated_activities=["a"])
    message, parsed = _updated_parsed(body)
    # Then that run cannot be shown to have begun after the copy arrived: it is read again
    assert needs_fresh_read(parsed, message, {"started_at_ms": 1_000}) is True


def test_a_copy_whose_receive_time_and_earlier_start_are_both_unknown_is_read_again():
    # Given a copy with no receive time (no SQS timestamp: 0) and an earlier run with no recorded start
    body = webhook_body("activities.updated", account=ACCOUNT, updated_activities=["a"])
    message = SyncMessage(body=body, group_id="g", correlation_id="c", received_at_ms=0)
    # Then nothing shows that run covered it: it is read again
    assert needs_fresh_read(parse_message(message), message, {}) is True
