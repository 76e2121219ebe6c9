"""Property: whatever Argyle's history, and however its webhooks arrive (duplicated, reordered,
late, interleaved with processing) and however Argyle and DynamoDB fail transiently, once the
queue drains the stored activities equal Argyle's truth exactly.

Argyle is the sandbox over HTTP; the queue and tables are template.yaml's, in moto; webhooks go
through the receiver's intake code and the queue is drained through the sync handler.

Argyle also misbehaves as v1 really can (issue: a copy that cannot silently drift): it pages by
offset and changes the account between two page requests of a listing, it "forgets" some
webhooks, and it sends signed removals of activities it still has. Webhooks cannot repair what
was never sent: the property is that the copy is exact once the queue has drained and one full
reconcile pass has run (what the scheduled reconciler does weekly for every account).

What "the queue design allows": deliveries in any order (the receiver enqueues in arrival order,
FIFO per account keeps it); every delivery is a message of its own (the receiver's SQS
deduplication id is per delivery), and SQS's real 5-minute deduplication window (simulated on the
harness's client) drops only a repeated send of one delivery; the sync decides what a repeated
body needs. A message failing maxReceiveCount times goes to the DLQ; the operator's redrive
brings it back (out of order) at the end.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import sync_handler
from argyle_ops.redrive import redrive
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.sync.messages import ReconcileJob
from argyle_pipeline.sync.reconcile_schedule import reconcile_message
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.flaky_dynamodb import FlakyDynamoDB
from tests.support.lambda_events import FakeLambdaContext
from tests.support.moto_tables import live_activities, table_items
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, RecordingServer
from tests.support.sync_harness import WEBHOOK_SECRET, SyncHarness

THROTTLED_OPERATIONS = frozenset({"batch_write_item", "batch_get_item", "put_item", "update_item",
                                  "transact_write_items"})


@pytest.fixture(scope="module", params=["v1", "v2"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    """Argyle on each API: v1 (activities, offset pages that shift) and v2 (gigs, keyset pages,
    gigs.* webhooks, no list counts); the stack runs the same version (the harness reads it from
    the sandbox's URL)."""
    with SandboxServer(seed=11, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET,
                       delivery_backoff=0.01, delivery_timeout=2.0, api=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def inbox(sandbox: SandboxServer) -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    sandbox.subscribe(f"{server.url}/webhooks/argyle", events=["*"], secret=WEBHOOK_SECRET,
                      config={"days_synced": 3})
    yield server
    server.stop()


@dataclass
class Round:
    """A periodic scan at Argyle, then some of the waiting webhooks arrive, then some processing."""

    add: int
    update: int
    remove: int
    deliver: float  # fraction of the waiting webhooks that arrive now, in a random order
    argyle_failures: int  # the next N Argyle requests answer 500 (4 in a row fail a message)
    invocations: int  # Lambda invocations run now (the queue need not be empty after)
    shift: int = 0  # listing pages during this round's processing before which Argyle removes and adds one
    drop: bool = False  # Argyle never sends one of this scan's webhooks
    lie: int = 0  # a signed activities.removed naming this many activities Argyle still has
    revoke: bool = False  # the worker revokes access (only accounts.removed is sent), then connects again


@dataclass
class History:
    activities: int
    undated: int
    page_limit: int
    continue_every_page: bool
    p_unprocessed: float
    p_throttle: float
    rounds: list[Round] = field(default_factory=list)
    # Listings of more activities than this are split into start-date windows listed at once
    # (None: the stack's default, 2,000, which these small accounts never reach).
    window_threshold: int | None = None


rounds = st.builds(Round, add=st.integers(0, 3), update=st.integers(0, 3), remove=st.integers(0, 2),
                   deliver=st.sampled_from([0.0, 0.5, 1.0]), argyle_failures=st.sampled_from([0, 0, 2, 5]),
                   invocations=st.integers(0, 3), shift=st.sampled_from([0, 0, 1, 3]), drop=st.booleans(),
                   lie=st.sampled_from([0, 0, 2]), revoke=st.sampled_from([False, False, False, True]))
histories = st.builds(
    History,
    # Small accounts often: the same activities then change again, and Argyle's second
    # activities.updated can be byte-identical to the first.
    activities=st.one_of(st.integers(1, 3), st.integers(0, 30)),
    undated=st.integers(0, 2),
    page_limit=st.sampled_from([4, 200]),
    continue_every_page=st.booleans(),
    p_unprocessed=st.sampled_from([0.0, 0.3]),
    p_throttle=st.sampled_from([0.0, 0.04]),
    rounds=st.lists(rounds, min_size=1, max_size=5),
    window_threshold=st.sampled_from([None, 0, 3]),
)


class Deliveries:
    """Webhooks Argyle has sent but we have not yet received, and how they arrive."""

    def __init__(self, sandbox: SandboxServer, inbox: RecordingServer, harness: SyncHarness,
                 rng: random.Random) -> None:
        self.sandbox, self.inbox, self.harness, self.rng = sandbox, inbox, harness, rng
        self.waiting: list[bytes] = []
        self.delivered: list[bytes] = []  # every body received so far, in order

    def collect(self) -> None:
        """What the sandbox sent for the latest scan."""
        self.sandbox.wait_for_deliveries(20)
        self.waiting.extend(r.body for r in self.inbox.requests)
        self.inbox.requests.clear()

    def deliver(self, fraction: float) -> None:
        self.rng.shuffle(self.waiting)
        count = round(len(self.waiting) * fraction)
        now, self.waiting = self.waiting[:count], self.waiting[count:]
        for body in now:
            request_id = f"req-{uuid.uuid4().hex}"
            assert self.harness.receive_webhook(body, request_id=request_id) == 202
            self.delivered.append(body)
            copy = self.rng.random()
            if copy < 0.2:  # Argyle retries at once (a new request): the sync skips or re-reads it
                self.harness.receive_webhook(body)
            elif copy < 0.3:  # a copy some time later, after other webhooks
                self.waiting.append(body)
            elif copy < 0.4:  # the receiver's send of this delivery repeated: SQS's window drops it
                self.harness.receive_webhook(body, request_id=request_id)


def process(harness: SyncHarness, invocations: int, continue_every_page: bool) -> None:
    for _ in range(invocations):
        messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10,
                                               AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages")
        if not messages:
            return
        harness.invoke(messages, context_for(continue_every_page))


def context_for(continue_every_page: bool) -> FakeLambdaContext:
    # With 60 s left and the 120 s margin, every listing part stops after one page.
    return FakeLambdaContext(60_000 if continue_every_page else None)


@pytest.fixture
def harness(stack_in_process: StackResources, sandbox: SandboxServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    yield SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                      api_key_secret=SANDBOX_KEY_SECRET)
    sync_handler.set_runtime(None)


# No shrinking: the sandbox lives for the whole module, so a failing history cannot be replayed
# against the same Argyle state; the failure is reported as found, with its history.
CONVERGENCE_SETTINGS = settings(deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Always tried: the same activity updated in two scans, each update processed before the next scan
# (Argyle's two updated bodies are then byte-identical), and a continuation per page.
ALWAYS_TRIED = example(history=History(activities=1, undated=1, page_limit=4, continue_every_page=True,
                                       p_unprocessed=0.3, p_throttle=0.0,
                                       rounds=[Round(0, 1, 0, 1.0, 0, 3), Round(0, 1, 0, 1.0, 0, 3)]),
                       rng=random.Random(1))
# Always tried on v1: a listing split into windows (threshold 0) of 4-activity pages, one page per
# window per invocation, Argyle changing the account between pages and failing requests.
WINDOWS_TRIED = example(history=History(activities=30, undated=0, page_limit=4, continue_every_page=True,
                                        p_unprocessed=0.3, p_throttle=0.0, window_threshold=0,
                                        rounds=[Round(2, 2, 1, 1.0, 2, 3, shift=3), Round(1, 1, 1, 0.5, 0, 2)]),
                        rng=random.Random(5))


@pytest.mark.parametrize("sandbox", ["v1"], indirect=True)
@settings(CONVERGENCE_SETTINGS, max_examples=12)
@given(history=histories, rng=st.randoms(use_true_random=False))
@ALWAYS_TRIED
@WINDOWS_TRIED
def test_the_stored_activities_converge_on_argyles_truth(history: History, rng: random.Random,
                                                         stack_in_process: StackResources,
                                                         sandbox: SandboxServer, inbox: RecordingServer,
                                                         harness: SyncHarness):
    check_convergence(history, rng, stack_in_process, sandbox, inbox, harness)


# API v2: the same property over gigs, keyset pages (Argyle's changes between pages move nothing),
# gigs.* webhooks and no list counts (every reconcile a full pass). Fewer histories than v1's: the
# rules are the same code, only the API's shape differs (and the suite's time is bounded).
@pytest.mark.parametrize("sandbox", ["v2"], indirect=True)
@settings(CONVERGENCE_SETTINGS, max_examples=6)
@given(history=histories, rng=st.randoms(use_true_random=False))
@ALWAYS_TRIED
def test_the_stored_gigs_converge_on_argyles_truth(history: History, rng: random.Random,
                                                   stack_in_process: StackResources,
                                                   sandbox: SandboxServer, inbox: RecordingServer,
                                                   harness: SyncHarness):
    check_convergence(history, rng, stack_in_process, sandbox, inbox, harness)


def check_convergence(history: History, rng: random.Random, stack_in_process: StackResources,
                      sandbox: SandboxServer, inbox: RecordingServer, harness: SyncHarness) -> None:
    # Given a fresh account at Argyle and a sync whose DynamoDB misbehaves as this history says
    flaky = FlakyDynamoDB(harness.dynamodb if not isinstance(harness.dynamodb, FlakyDynamoDB)
                          else harness.dynamodb._client, seed=rng.randrange(2**32),
                          p_unprocessed=history.p_unprocessed, p_throttle=history.p_throttle,
                          throttle_operations=THROTTLED_OPERATIONS)
    harness.rebuild(dynamodb=flaky, page_limit=history.page_limit, window_threshold=history.window_threshold)
    sandbox.faults.reset()
    deliveries = Deliveries(sandbox, inbox, harness, rng)
    user, account = sandbox.connect_account(n_activities=history.activities, undated=history.undated)
    deliveries.collect()
    revoked: list[str] = []

    # When Argyle changes the account, its webhooks arrive in any order and are processed in between
    process(harness, 1, history.continue_every_page)
    for step in history.rounds:
        if step.revoke:
            # The worker revokes access, then connects again (Argyle makes a new account for it)
            sandbox.revoke(account)
            revoked.append(account)
            _, account = sandbox.connect_account(user_id=user, n_activities=history.activities)
            deliveries.collect()
        if step.drop:
            sandbox.faults.update({"drop_next_deliveries": 1})
        if sandbox.truth(account) or step.add:
            sandbox.periodic_scan(account, add=step.add, update=step.update, remove=step.remove)
            deliveries.collect()
        if step.lie and sandbox.truth(account):
            sandbox.lying_removal(account, min(step.lie, len(sandbox.truth(account))))
            deliveries.collect()
        deliveries.deliver(step.deliver)
        sandbox.faults.update({"fail_next": step.argyle_failures, "page_shift_remove": 1, "page_shift_add": 1,
                               "page_shift_times": step.shift, "page_shift_account": account})
        process(harness, step.invocations, history.continue_every_page)
        deliveries.collect()  # what the scans between listing pages sent

    # And everything still on its way arrives, the faults stop, the queue drains, and the DLQ is redriven
    sandbox.faults.reset()
    deliveries.collect()
    while deliveries.waiting:
        deliveries.deliver(1.0)
    flaky.enabled = False
    harness.drain(context=lambda: context_for(history.continue_every_page))
    redrive(harness.sqs, harness.dlq_url, harness.queue_url)
    harness.drain(context=lambda: context_for(history.continue_every_page))
    # And one full reconcile pass of every account runs, through the queue, in each account's group
    for each in [*revoked, account]:
        harness.queue.send(reconcile_message(ReconcileJob(account=each, request_id=f"reconcile-{rng.random()}",
                                                          scope="full"), "corr", int(time.time() * 1000)))
    harness.drain(context=lambda: context_for(history.continue_every_page))

    # Then the stored activities are exactly Argyle's
    assert harness.dlq_bodies() == []
    assert live_activities(stack_in_process.tables["ActivitiesTable"], account) == {
        doc["id"]: doc for doc in sandbox.truth(account)}
    # And a revoked account has nothing left but its marker: no activity, no tombstone, no archive
    state = SyncStateStore(stack_in_process.tables["SyncStateTable"], boto3.client("dynamodb"))
    for gone in revoked:
        assert [i for i in table_items(stack_in_process.tables["ActivitiesTable"]) if i["account_id"] == gone] == []
        marker = state.account_state(gone)
        assert marker is not None and marker["status"] == "purged", marker
        assert state.archived_keys(f"account:{gone}") == []


# --- Identical bodies delivered again after the first was processed (issue 18) ----------------------
# Argyle's bodies carry no event id or time: the same activities updated again give a byte-identical
# activities.updated, and Argyle may deliver any earlier body again. Here each such body arrives
# after its first copy was processed and after Argyle's data changed, through SQS's deduplication
# window (which would drop it if the receiver keyed messages by the body alone).


@dataclass
class Change:
    """Argyle updates the tracked activities again (their activities.updated repeats byte for byte
    unless this change also adds or removes), then the new webhooks and copies of earlier,
    processed ones arrive, and the sync drains the queue or runs one invocation."""

    add: int
    remove: int
    earlier_copies: int
    drain: bool


@dataclass
class RepeatHistory:
    activities: int
    tracked: int  # activities updated by every change
    changes: list[Change] = field(default_factory=list)


repeat_histories = st.builds(
    RepeatHistory,
    activities=st.integers(2, 6),
    tracked=st.integers(1, 2),
    changes=st.lists(st.builds(Change, add=st.sampled_from([0, 0, 1]), remove=st.sampled_from([0, 0, 1]),
                               earlier_copies=st.integers(0, 2), drain=st.booleans()),
                     min_size=2, max_size=4),
)


@pytest.mark.parametrize("sandbox", ["v1"], indirect=True)  # v2's gigs.updated: tests/e2e, unit tests
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=repeat_histories, rng=st.randoms(use_true_random=False))
# Always tried: the case, the same activity's tips changed three times, each update's
# identical body arriving after the previous one was synced.
@example(history=RepeatHistory(activities=2, tracked=1, changes=[Change(0, 0, 0, True)] * 3), rng=random.Random(3))
def test_identical_bodies_delivered_again_after_processing_leave_the_copy_exact(
        history: RepeatHistory, rng: random.Random, stack_in_process: StackResources, sandbox: SandboxServer,
        inbox: RecordingServer, harness: SyncHarness):
    # Given a synced account and the activities every change updates again
    harness.rebuild()
    sandbox.faults.reset()
    deliveries = Deliveries(sandbox, inbox, harness, rng)
    _, account = sandbox.connect_account(n_activities=history.activities)
    deliveries.collect()
    deliveries.deliver(1.0)
    harness.drain()
    tracked = sorted(doc["id"] for doc in sandbox.truth(account))[:history.tracked]
    repeats = 0

    # When Argyle changes them again and again, and its webhooks, new and old, arrive after the
    # earlier ones were processed
    for change in history.changes:
        others = sorted(doc["id"] for doc in sandbox.truth(account) if doc["id"] not in tracked)
        removing = rng.sample(others, min(change.remove, len(others)))
        sandbox.periodic_scan(account, add=change.add, update_ids=tracked, remove_ids=removing)
        seen, already_waiting = set(deliveries.delivered), len(deliveries.waiting)
        deliveries.collect()
        # (each scan's accounts.updated repeats too: only the updates count here)
        repeats += sum(body in seen for body in deliveries.waiting[already_waiting:]
                       if json.loads(body)["event"] == sandbox.api.event("updated"))
        deliveries.waiting.extend(rng.sample(deliveries.delivered, min(change.earlier_copies,
                                                                       len(deliveries.delivered))))
        deliveries.deliver(1.0)
        if change.drain:
            harness.drain()
        else:
            process(harness, 1, continue_every_page=False)

    # And the rest is processed
    while deliveries.waiting:
        deliveries.deliver(1.0)
    harness.drain()

    # Then the stored activities are exactly Argyle's, the latest change of each included
    assert harness.dlq_bodies() == []
    assert live_activities(stack_in_process.tables["ActivitiesTable"], account) == {
        doc["id"]: doc for doc in sandbox.truth(account)}
    # (and when nothing but the tracked activities changed, every update after the first was
    # announced by a byte-identical body)
    if not any(c.add or c.remove for c in history.changes):
        assert repeats == len(history.changes) - 1
