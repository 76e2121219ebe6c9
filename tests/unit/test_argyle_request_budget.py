"""The stack's shared Argyle request budget (argyle/request_budget.py): its rate across many
invocations, its shards, the shared pause after a 429, bounded waits; the client's use of it; and
its DynamoDB store (moto's in-process mock, with the conditional failures and throttling moto
never produces injected through a botocore event hook)."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from argyle_pipeline.argyle.client import ArgyleUnavailable
from argyle_pipeline.argyle.request_budget import RateBudgetExhausted, ShardState, SharedRequestBudget
from argyle_pipeline.aws.argyle_budget_store import ArgyleBudgetStore
from local_stack.template_resources import StackResources, create_tables, load_template
from tests.unit.test_argyle_client_rules import FakeResponse, client, page


class MemoryBudgetStore:
    """The store's contract in memory, counting writes per shard; `lose_next` loses races."""

    def __init__(self) -> None:
        self.shards: dict[int, ShardState] = {}
        self.writes: dict[int, int] = {}
        self.lose_next = 0

    def read_shard(self, shard: int) -> ShardState | None:
        return self.shards.get(shard)

    def write_shard(self, shard: int, tokens: float, refilled_at: float, expected_version: int) -> bool:
        current = self.shards.get(shard)
        if self.lose_next:
            self.lose_next -= 1
            return False
        if (current.version if current else 0) != expected_version:
            return False
        self.writes[shard] = self.writes.get(shard, 0) + 1
        paused = current.paused_until if current else 0.0
        self.shards[shard] = ShardState(tokens, refilled_at, paused, expected_version + 1)
        return True

    def pause_shard(self, shard: int, until: float) -> None:
        current = self.shards.get(shard) or ShardState(float("inf"), 0.0)
        if current.paused_until < until:
            self.shards[shard] = ShardState(current.tokens, current.refilled_at, until, current.version)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budgets(store: Any, clock: Clock, n: int, rate: float = 40.0, **kwargs: Any) -> list[SharedRequestBudget]:
    """n invocations (containers) sharing one store, as concurrent Lambdas share the table."""
    return [SharedRequestBudget(store, rate, clock=clock, sleep=clock.sleep, rand=random.Random(i), **kwargs)
            for i in range(n)]


def test_many_invocations_together_keep_to_the_stacks_rate():
    # Given 20 invocations sharing a 40 requests/s budget
    store, clock = MemoryBudgetStore(), Clock()
    invocations = budgets(store, clock, 20)
    # When they take 2,000 tokens between them, round robin
    start = clock.now
    for n in range(2_000):
        invocations[n % 20].acquire()
    # Then it took about 2,000 / 40 = 50 s of (simulated) time: the whole stack kept to 40/s
    # (plus at most the initial burst of one second's budget), never faster
    elapsed = clock.now - start
    assert 2_000 / 40 - 1.5 <= elapsed <= 2_000 / 40 * 1.1


def test_every_shard_takes_a_share_of_the_writes_no_hot_item():
    # Given 8 shards and many invocations taking tokens
    store, clock = MemoryBudgetStore(), Clock()
    invocations = budgets(store, clock, 10, shards=8)
    start = clock.now
    for n in range(1_600):
        invocations[n % 10].acquire()
    elapsed = clock.now - start
    # Then every shard item was written, none took more than twice its fair share, and no item is
    # written faster than its own share of the rate (40/8 per second): no item every call updates
    assert sorted(store.writes) == list(range(8))
    fair = sum(store.writes.values()) / 8
    assert max(store.writes.values()) <= 2 * fair
    assert max(store.writes.values()) / elapsed <= 40 / 8 * 1.1


def test_a_lease_takes_several_tokens_per_round_trip_when_the_budget_has_room():
    # Given a budget with room (one invocation, well under the rate)
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, lease=2)
    # When it takes 4 tokens at once
    for _ in range(4):
        budget.acquire()
    # Then it took them in 2 store writes of 2 tokens each
    assert sum(store.writes.values()) == 2


def test_a_lost_race_on_a_shard_tries_another_and_still_gets_its_token():
    # Given a store where the next 2 conditional writes lose to another invocation
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    store.lose_next = 2
    # When a token is taken
    budget.acquire()
    # Then it was granted from a third attempt, without sleeping out a refill
    assert sum(store.writes.values()) == 1
    assert sum(clock.slept) < 0.01


def test_a_shard_lost_to_another_invocation_is_tried_again_at_once_even_while_another_is_empty():
    # Given two shards: one spent to its last token (a refill is 0.5 s away), and one whose next
    # conditional write loses to another invocation
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=4.0, shards=2)
    store.shards[0] = ShardState(0.0, clock.now, 0.0, 1)
    store.lose_next = 1
    # When a token is taken
    budget.acquire()
    # Then it came from the contended shard on the next round, without sleeping out the refill
    assert store.writes == {1: 1}
    assert sum(clock.slept) < 0.01


@pytest.mark.parametrize(("tokens_left", "sleep"), [(0.0, 0.25), (0.5, 0.125)])
def test_a_spent_budget_is_waited_out_in_one_sleep_until_the_refill_not_by_polling_the_store(
        tokens_left: float, sleep: float) -> None:
    # Given a stack budget of 4 requests/s in one shard, spent to nothing or to half a token just now
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=4.0, shards=1)
    store.shards[0] = ShardState(tokens_left, clock.now, 0.0, 1)
    # When a token is taken
    budget.acquire()
    # Then the invocation slept once, for the rest of one token at 4/s, and read the store twice
    assert clock.slept == [pytest.approx(sleep)]
    assert budget.store_calls == 3  # a read, the read after the sleep, and the write that took the token


def test_the_same_or_a_shorter_retry_after_during_a_pause_shortens_nothing_and_writes_nothing():
    # Given an invocation told by Argyle to wait 30 s (every shard paused in the store)
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    start = clock.now
    budget.slow_down(30.0)
    calls = budget.store_calls
    # When more 429s arrive with the same and with shorter Retry-After values
    budget.slow_down(30.0)
    budget.slow_down(5.0)
    # Then no further store write was made, and the next token still waits the whole 30 s
    assert budget.store_calls == calls
    budget.acquire()
    assert clock.now - start >= 30.0


@pytest.mark.parametrize(("rate", "shards", "lease"), [(0.0, 8, 2), (-1.0, 8, 2), (10.0, 0, 2), (10.0, 8, 0)])
def test_a_budget_with_no_rate_no_shard_or_no_lease_is_refused_saying_what_it_needs(
        rate: float, shards: int, lease: int):
    with pytest.raises(ValueError, match="requests_per_second must be > 0, shards and lease at least 1"):
        SharedRequestBudget(MemoryBudgetStore(), rate, shards=shards, lease=lease)


def test_a_429_pauses_every_invocation_until_its_retry_after():
    # Given two invocations, and the first told by Argyle to wait 5 s
    store, clock = MemoryBudgetStore(), Clock()
    first, second = budgets(store, clock, 2)
    second.acquire()  # leases 2 tokens, uses 1
    start = clock.now
    first.slow_down(5.0)
    # When the second invocation (which never saw the 429) asks for its next tokens
    second.acquire()  # its one leased token still goes (a lease is at most lease-1 tokens, for 1 s)
    assert clock.now == start
    second.acquire()
    # Then the next one waited for the pause: every shard carries it
    assert clock.now - start >= 5.0
    assert all(state.paused_until == start + 5.0 for state in store.shards.values())
    assert len(store.shards) == 8


def test_a_wait_past_the_deadline_raises_instead_of_running_into_the_timeout():
    # Given Argyle's Retry-After of 30 s and an invocation with 10 s to spare
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    budget.set_deadline(lambda: clock.now + 10.0)
    budget.slow_down(30.0)
    # When it asks for a token
    with pytest.raises(RateBudgetExhausted) as raised:
        budget.acquire()
    # Then it did not wait at all (the wait could not end in time), and it is an ArgyleUnavailable
    # with the wait it would have needed, which the listing hands on as a continuation
    assert clock.slept == []
    assert isinstance(raised.value, ArgyleUnavailable) and raised.value.retry_after == pytest.approx(30.0)


def test_a_wait_that_ends_exactly_at_the_deadline_is_still_waited_out():
    # Given Argyle's Retry-After of 10 s and an invocation with exactly 10 s to spare
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    budget.set_deadline(lambda: clock.now + 10.0)
    start = clock.now
    budget.slow_down(10.0)
    # When it asks for a token
    budget.acquire()
    # Then it waited the whole pause (it ends in time) and got its token, rather than handing the work on
    assert clock.slept == [10.0] and clock.now == start + 10.0


def test_the_client_takes_a_token_before_every_request_and_shares_a_429():
    # Given a client with a budget, and Argyle answering 429 (Retry-After 2) then a page
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=8.0, shards=2)
    argyle, pool, sleeps = client(FakeResponse(429, b"{}", {"Retry-After": "2"}), page([]), budget=budget)
    taken: list[int] = []
    original = budget.acquire

    def counting_acquire() -> None:
        taken.append(len(pool.requests))
        original()

    budget.acquire = counting_acquire  # type: ignore[method-assign]
    # When a listing page is fetched
    list(argyle.list_activity_pages("acc"))
    # Then a token was taken before each of the two requests, and the 429 paused the shared store
    assert taken == [0, 1]
    assert {state.paused_until for state in store.shards.values()} == {1_000_000.0 + 2.0}
    assert sleeps == [2.0]


@pytest.mark.parametrize(("later", "writes"), [(1.0, 1), (1.5, 2)])
def test_a_leased_token_is_used_within_one_second_and_dropped_after(later: float, writes: int):
    # Given an invocation that leased 2 tokens in one store write and used one
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, lease=2)
    budget.acquire()
    # When its next request comes a second later, or later still
    clock.now += later
    budget.acquire()
    # Then the leased token serves it up to a full second; after that it is dropped (kept longer, leased
    # tokens could burst above the stack's rate) and a new one is taken from the store
    assert sum(store.writes.values()) == writes


def test_a_budget_spent_on_every_shard_reads_only_three_shards_before_waiting_for_the_refill():
    # Given 8 shards of a 32 requests/s budget, all spent just now (a refill is 0.25 s away)
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=32.0, shards=8)
    for shard in range(8):
        store.shards[shard] = ShardState(0.0, clock.now, 0.0, 1)
    # When a token is taken
    budget.acquire()
    # Then it read 3 shards (not all 8), slept once for the refill, then read and wrote one shard
    assert clock.slept == [pytest.approx(0.25)]
    assert budget.store_calls == 3 + 1 + 1


@pytest.mark.parametrize(("retry_after", "waited"), [(60.0, True), (60.5, False)])
def test_without_a_deadline_a_token_is_waited_for_a_minute_at_most(retry_after: float, waited: bool):
    # Given an invocation with no deadline set, and Argyle's Retry-After of a minute, or a little more
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    budget.slow_down(retry_after)
    # When it asks for a token
    if waited:
        budget.acquire()
    else:
        with pytest.raises(RateBudgetExhausted):
            budget.acquire()
    # Then a wait of a minute is slept out; a longer one is handed on at once, without sleeping
    assert clock.slept == ([retry_after] if waited else [])


@pytest.mark.parametrize(("rate", "shards", "lease"), [(1.0, 8, 2), (0.5, 8, 2), (10.0, 1, 2), (10.0, 8, 1)])
def test_a_budget_of_one_request_a_second_one_shard_or_one_token_leases_works(rate: float, shards: int, lease: int):
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=rate, shards=shards, lease=lease)
    budget.acquire()
    assert sum(store.writes.values()) == 1 and clock.slept == []


def test_a_fresh_stack_lets_through_at_most_one_seconds_budget_at_once():
    # Given a stack budget of 2 requests/s over 2 shards (1 request/s each), never used
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, rate=2.0, shards=2)
    # When 3 requests come at once
    budget.acquire()
    budget.acquire()
    assert clock.slept == []
    budget.acquire()
    # Then the third waited: one second's budget, 2 requests, went at once, and no more
    assert sum(clock.slept) > 0


def test_the_tokens_leased_as_a_pause_ends_are_all_used():
    # Given an invocation that waited out a 5 s Retry-After and then leased 2 tokens in one write
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, lease=2)
    budget.slow_down(5.0)
    budget.acquire()
    assert clock.slept == [5.0] and sum(store.writes.values()) == 1
    # When its next request comes at the same moment
    budget.acquire()
    # Then the second leased token serves it: none of the stack's budget is thrown away
    assert sum(store.writes.values()) == 1


def test_a_request_the_moment_a_pause_ends_takes_its_token_from_the_stack():
    # Given every shard paused for 5 s by another invocation's 429
    store, clock = MemoryBudgetStore(), Clock()
    first, second = budgets(store, clock, 2)
    first.slow_down(5.0)
    # When the other invocation asks for a token exactly when the pause ends
    clock.now += 5.0
    second.acquire()
    # Then it waited for nothing, and its token was taken from the stack's budget (a store write)
    assert clock.slept == [] and sum(store.writes.values()) == 1


@pytest.mark.parametrize("retry_after", [0.0, 0.25])
def test_a_retry_after_under_a_second_pauses_only_that_long(retry_after: float):
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1)
    start = clock.now
    budget.slow_down(retry_after)
    budget.acquire()
    assert clock.now - start == pytest.approx(retry_after)


def test_a_429_leaves_an_invocation_no_token_it_did_not_take_from_the_stack():
    # Given an invocation that has used both tokens of its lease (one store write)
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, lease=2)
    budget.acquire()
    budget.acquire()
    # When Argyle answers 429 with Retry-After: 0, and the invocation makes its next request
    budget.slow_down(0.0)
    budget.acquire()
    # Then that request's token was taken from the stack's budget: 3 requests, 2 leases of 2 written
    assert sum(store.writes.values()) == 2


def test_a_429_is_shared_by_one_store_write_per_shard_each_counted():
    # Given a budget of 8 shards
    store, clock = MemoryBudgetStore(), Clock()
    (budget,) = budgets(store, clock, 1, shards=8)
    # When Argyle answers 429
    budget.slow_down(5.0)
    # Then each shard was paused once, and the budget counts those 8 store calls (what benchmarks report)
    assert budget.store_calls == 8
    assert sorted(store.shards) == list(range(8))
    assert {state.paused_until for state in store.shards.values()} == {clock.now + 5.0}


# --- the DynamoDB store -----------------------------------------------------------------------------


@pytest.fixture
def dynamodb() -> Any:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        out = StackResources()
        create_tables(client, load_template(), "budget", out)  # the table as template.yaml defines it
        yield client, out.tables["SyncStateTable"]


def inject(client: Any, operation: str, code: str, times: int) -> list[str]:
    """Make the next `times` calls of `operation` fail with `code`, before they reach moto."""
    seen: list[str] = []

    def fail(**_: Any) -> None:
        if len(seen) < times:
            seen.append(code)
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, operation)

    client.meta.events.register(f"before-call.dynamodb.{operation}", fail)
    return seen


def test_the_store_keeps_versions_and_refuses_a_stale_write(dynamodb):
    client, table = dynamodb
    store = ArgyleBudgetStore(table, client)
    assert store.read_shard(3) is None
    assert store.write_shard(3, 4.5, 100.0, expected_version=0)
    assert store.read_shard(3) == ShardState(4.5, 100.0, 0.0, 1)
    # A second writer that read version 0 lost the race: False, nothing overwritten
    assert not store.write_shard(3, 1.0, 101.0, expected_version=0)
    assert store.read_shard(3) == ShardState(4.5, 100.0, 0.0, 1)
    # A pause is only ever raised, and survives the next take's write
    store.pause_shard(3, 200.0)
    store.pause_shard(3, 150.0)
    assert store.write_shard(3, 2.0, 102.0, expected_version=1)
    assert store.read_shard(3) == ShardState(2.0, 102.0, 200.0, 2)
    # The shards are apart: their own partition keys
    item_keys = {i["pk"]["S"] for i in client.scan(TableName=table)["Items"]}
    assert item_keys == {"ARGYLE_BUDGET#03"}


def test_on_dynamodb_a_conditional_failure_moves_to_another_shard(dynamodb):
    # Given conditional failures injected on the next two writes (another invocation won them)
    client, table = dynamodb
    clock = Clock()
    budget = SharedRequestBudget(ArgyleBudgetStore(table, client), 40.0, clock=clock, sleep=clock.sleep,
                                 rand=random.Random(1))
    lost = inject(client, "UpdateItem", "ConditionalCheckFailedException", 2)
    # When a token is taken
    budget.acquire()
    # Then both losses were absorbed and the token came from a third shard
    assert lost == ["ConditionalCheckFailedException"] * 2
    items = client.scan(TableName=table)["Items"]
    assert len(items) == 1 and items[0]["version"]["N"] == "1"


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
def test_on_dynamodb_throttling_that_outlasts_retries_fails_the_call_it_is_not_swallowed(dynamodb, code):
    # Given DynamoDB throttling every write (after botocore's own retries)
    client, table = dynamodb
    budget = SharedRequestBudget(ArgyleBudgetStore(table, client), 40.0)
    inject(client, "UpdateItem", code, 100)
    # When a token is taken, the error is raised: the Argyle call, and so the record, fails and is retried
    with pytest.raises(ClientError) as raised:
        budget.acquire()
    assert raised.value.response["Error"]["Code"] == code


# --- the sync handler's wiring ----------------------------------------------------------------------


def test_each_record_bounds_the_budgets_waits_by_its_invocations_time_left():
    # Given the sync's runtime with a budget, and an invocation with 100 s left
    import time

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    import sync_handler
    from argyle_pipeline.aws.event_queue import QueuedEvent, dedupe_key
    from argyle_pipeline.sync.retry_schedule import RetrySchedule
    from tests.support.lambda_events import FakeLambdaContext, record_for

    budget = SharedRequestBudget(MemoryBudgetStore(), 40.0)
    seen: list[float | None] = []

    class Sync:
        argyle_retries = 0

    def process_once(**_: Any) -> dict[str, Any]:
        seen.append(budget._deadline())  # what a wait for a token would be bounded by, during the record
        return {"event": "activities.fully_synced", "action": "synced"}

    runtime = sync_handler.SyncRuntime(sync=Sync(), process_once=process_once, idempotency_config=None,  # type: ignore[arg-type]
                                       queue=None, retry_schedule=RetrySchedule((1,), 5),  # type: ignore[arg-type]
                                       argyle_budget=budget, budget_reserve_ms=60_000)
    sync_handler.set_runtime(runtime)
    try:
        body = b'{"event": "activities.fully_synced", "name": "n", "data": {"account": "a", "user": "u"}}'
        event = QueuedEvent(body=body, event_name="activities.fully_synced", group_id="account:a",
                            dedupe_key=dedupe_key(body), correlation_id="c", received_at_ms=1)
        # When a record is handled
        sync_handler.handle_record(SQSRecord(record_for(event)), FakeLambdaContext(remaining_ms=100_000))
    finally:
        sync_handler.set_runtime(None)
    # Then during it no wait could end later than its time left less the reserve (100 s - 60 s)
    (deadline,) = seen
    assert deadline is not None and abs(deadline - (time.time() + 40.0)) < 5.0
