"""The sync function end to end: the Argyle sandbox over real HTTP, template.yaml's queue and
tables in moto, webhooks enqueued by the receiver's intake code, the queue drained through
`sync_handler.lambda_handler` as Lambda delivers it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import sync_handler
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.lambda_events import FakeLambdaContext, sqs_event
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, RecordingServer, webhook_inbox
from tests.support.sync_harness import WEBHOOK_SECRET, SyncHarness, fully_synced_body


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=7, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET,
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        yield server


@pytest.fixture
def inbox(sandbox: SandboxServer) -> Iterator[RecordingServer]:
    with webhook_inbox(sandbox, WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
def harness(stack_in_process: StackResources, sandbox: SandboxServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    yield SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                      api_key_secret=SANDBOX_KEY_SECRET)
    sync_handler.set_runtime(None)


def delivered(sandbox: SandboxServer, inbox: RecordingServer) -> list[bytes]:
    """Bodies the sandbox has delivered since the last call, in delivery order."""
    sandbox.wait_for_deliveries(20)
    bodies = [r.body for r in inbox.requests]
    inbox.requests.clear()
    return bodies


def events_of(bodies: list[bytes]) -> list[str]:
    return [json.loads(b)["event"] for b in bodies]


def stored(stack: StackResources, account: str) -> dict[str, dict[str, Any]]:
    return live_activities(stack.tables["ActivitiesTable"], account)


def truth(sandbox: SandboxServer, account: str) -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for doc in sandbox.truth(account)}


def state_store(stack: StackResources) -> SyncStateStore:
    return SyncStateStore(stack.tables["SyncStateTable"], boto3.client("dynamodb"))


def test_every_event_of_a_connection_and_a_periodic_scan(stack_in_process: StackResources,
                                                         sandbox: SandboxServer, inbox: RecordingServer,
                                                         harness: SyncHarness):
    # Given a new account with 250 activities (3 of them without a start date)
    user, account = sandbox.connect_account(n_activities=250, undated=3)
    bodies = delivered(sandbox, inbox)
    assert events_of(bodies) == ["accounts.connected", "activities.partially_synced",
                                 "activities.fully_synced", "accounts.updated", "users.fully_synced"]
    # When its webhooks go through the receiver and the queue drains into the sync
    for body in bodies:
        assert harness.receive_webhook(body) == 202
    report = harness.drain()
    # Then the stored activities are Argyle's, exactly, undated ones included
    assert report.failed == 0
    assert stored(stack_in_process, account) == truth(sandbox, account)
    state = state_store(stack_in_process)
    account_state = state.account_state(account)
    assert account_state is not None and account_state["status"] == "fully_synced"
    assert account_state["available_count"] == 253 and account_state["days_synced"] == 30
    user_record = state.user(user)
    assert user_record is not None and user_record["resource"]["id"] == user
    # When a periodic scan adds, updates and removes activities
    sandbox.periodic_scan(account, add=6, update=5, remove=4)
    bodies = delivered(sandbox, inbox)
    assert sorted(events_of(bodies)) == ["accounts.updated", "activities.added", "activities.removed",
                                         "activities.updated"]
    for body in bodies:
        harness.receive_webhook(body)
    harness.drain()
    # Then the copy follows, removals included, and every event was counted once
    assert stored(stack_in_process, account) == truth(sandbox, account)
    assert state.account_state(account)["available_count"] == 253 + 6 - 4  # type: ignore[index]
    assert state.event_counts() == {
        "accounts.connected": 1, "activities.partially_synced": 1, "activities.fully_synced": 1,
        "users.fully_synced": 1, "activities.added": 1, "activities.updated": 1, "activities.removed": 1,
        # the scan's accounts.updated ({account, user}) is byte-identical to the connect's: one dedupe key
        "accounts.updated": 1}
    assert ActivityStore(stack_in_process.tables["ActivitiesTable"], boto3.client("dynamodb")).count(
        account) == {"live": 255, "removed": 4}


def test_many_pages_cost_one_call_per_page_and_one_write_per_25(
        stack_in_process: StackResources, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch):
    # Given an account of 430 activities, pages of 50, and only its fully_synced webhook
    harness = SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                          api_key_secret=SANDBOX_KEY_SECRET, page_limit=50)
    _, account = sandbox.connect_account(n_activities=430)
    harness.receive_webhook(fully_synced_body(sandbox, account))
    store = harness.runtime.sync.ctx.activities
    # When it is processed
    harness.drain()
    # Then 9 pages were fetched, ceil(430/25) batch writes made, and the copy is exact
    assert harness.argyle_calls == math.ceil(430 / 50)
    assert store.write_calls == math.ceil(430 / 25)  # type: ignore[attr-defined]
    assert stored(stack_in_process, account) == truth(sandbox, account)


def test_rate_limits_and_server_errors_are_retried(stack_in_process: StackResources, sandbox: SandboxServer,
                                                  harness: SyncHarness):
    # Given Argyle answering 429 (Retry-After 1) twice, then a 500, then normally
    _, account = sandbox.connect_account(n_activities=300)
    sandbox.faults.update({"rate_limit_next": 2, "fail_next": 1})
    harness.receive_webhook(fully_synced_body(sandbox, account))
    # When the webhook is processed
    report = harness.drain()
    # Then the client retried within the invocation (waits honoured, not slept here) and succeeded
    assert report.failed == 0
    assert harness.sleeps[:2] == [1.0, 1.0] and len(harness.sleeps) == 3
    assert stored(stack_in_process, account) == truth(sandbox, account)


def test_when_argyle_stays_down_the_message_fails_and_succeeds_on_a_later_receive(
        stack_in_process: StackResources, sandbox: SandboxServer, harness: SyncHarness):
    # Given Argyle failing more often than the client retries (4 attempts)
    _, account = sandbox.connect_account(n_activities=50)
    sandbox.faults.update({"fail_next": 5})
    harness.receive_webhook(fully_synced_body(sandbox, account))
    # When the queue drains
    report = harness.drain()
    # Then the first receive failed and SQS's next delivery of the message completed the sync
    assert (report.failed, report.processed) == (1, 1)
    assert stored(stack_in_process, account) == truth(sandbox, account)
    assert state_store(stack_in_process).account_state(account)["status"] == "fully_synced"  # type: ignore[index]


def test_a_copy_days_later_is_listed_once_more_and_changes_nothing_else(
        stack_in_process: StackResources, sandbox: SandboxServer, harness: SyncHarness):
    # Given a fully_synced webhook already processed
    _, account = sandbox.connect_account(n_activities=250)
    body = fully_synced_body(sandbox, account)
    harness.receive_webhook(body)
    harness.drain()
    calls, before = harness.argyle_calls, stored(stack_in_process, account)
    state_before = state_store(stack_in_process).account_state(account)
    # When Argyle delivers the same body again, days later (twice: our first answer was lost)
    harness.receive_webhook(body)
    harness.receive_webhook(body)
    report = harness.drain()
    # Then it was listed once more (it may follow a reconnection: docs/sync.md, "What a duplicate
    # is"), the second copy was covered by that listing, and nothing changed or was counted twice
    assert report.processed == 2 and harness.argyle_calls == 2 * calls
    assert stored(stack_in_process, account) == before
    # (but the times of the latest delivery and sync)
    times = {"updated_at", "fully_synced_at", "last_event_received_at_ms", "last_sync", "data_as_of"}
    state_after = state_store(stack_in_process).account_state(account)
    assert state_after is not None and state_before is not None
    assert {k: v for k, v in state_after.items() if k not in times} == {
        k: v for k, v in state_before.items() if k not in times}
    assert state_store(stack_in_process).event_counts() == {"activities.fully_synced": 1}


def test_the_queue_drops_only_a_resend_of_the_same_delivery(sandbox: SandboxServer, harness: SyncHarness):
    # Given a fully_synced delivery, and the receiver sending it twice (its answer from SQS was lost)
    _, account = sandbox.connect_account(n_activities=5)
    body = fully_synced_body(sandbox, account)
    harness.receive_webhook(body, request_id="req-1")
    harness.receive_webhook(body, request_id="req-1")
    # And Argyle delivering the same bytes again a moment later (a new HTTP request)
    harness.receive_webhook(body, request_id="req-2")
    # When the queue drains
    report = harness.drain()
    # Then SQS's window dropped the re-send; Argyle's second delivery reached the sync, which
    # skipped it without an Argyle call (the run began after it arrived, so it covered it)
    assert harness.dedupe_window.dropped == 1
    assert report.processed == 2
    assert harness.argyle_calls == 1


def test_removed_delivered_before_and_after_added_converges(stack_in_process: StackResources,
                                                           sandbox: SandboxServer, inbox: RecordingServer,
                                                           harness: SyncHarness):
    # Given a synced account
    _, account = sandbox.connect_account(n_activities=40)
    for body in delivered(sandbox, inbox):
        harness.receive_webhook(body)
    harness.drain()
    # And a scan that adds activities and removes one of them in the next scan
    added = sandbox.periodic_scan(account, add=3).added
    added_body = delivered(sandbox, inbox)
    sandbox.periodic_scan(account, remove_ids=[added[0]])
    removed_body = delivered(sandbox, inbox)
    # When the removal is delivered first, then the addition, then the removal again (a retry)
    for body in removed_body + added_body:
        harness.receive_webhook(body)
    harness.drain()
    harness.receive_webhook(removed_body[0])
    harness.drain()
    # Then the removed activity is not resurrected, and the copy equals Argyle's
    assert added[0] not in stored(stack_in_process, account)
    assert stored(stack_in_process, account) == truth(sandbox, account)


def test_a_long_listing_continues_in_new_messages_without_skipping_or_repeating(
        stack_in_process: StackResources, sandbox: SandboxServer, harness: SyncHarness,
        monkeypatch: pytest.MonkeyPatch):
    # Given a margin larger than the time left, so every part stops after one page
    _, account = sandbox.connect_account(n_activities=650)
    harness.runtime.sync.ctx.options = type(harness.runtime.sync.ctx.options)(continuation_margin_ms=10**9)
    body = fully_synced_body(sandbox, account)
    harness.receive_webhook(body)
    state = state_store(stack_in_process)
    # When the first part runs
    messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10,
                                           AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    harness.invoke(messages, FakeLambdaContext())
    # Then one page is stored, the account is not yet marked synced, and part 1 waits in the queue
    assert len(stored(stack_in_process, account)) == 200
    assert state.account_state(account) is None
    # When the rest drains
    report = harness.drain()
    # Then 3 more parts ran, each page was fetched once, and the account is synced exactly
    assert report.processed == 3
    assert harness.argyle_calls == math.ceil(650 / 200)
    assert stored(stack_in_process, account) == truth(sandbox, account)
    assert state.account_state(account)["status"] == "fully_synced"  # type: ignore[index]
    assert state.event_counts() == {"activities.fully_synced": 1}


def test_a_second_update_with_a_byte_identical_body_is_not_mistaken_for_a_duplicate(
        stack_in_process: StackResources, sandbox: SandboxServer, inbox: RecordingServer, harness: SyncHarness):
    # Given a synced account whose activity X was updated, and that update processed
    _, account = sandbox.connect_account(n_activities=20)
    for body in delivered(sandbox, inbox):
        harness.receive_webhook(body)
    harness.drain()
    target = next(iter(truth(sandbox, account)))
    sandbox.periodic_scan(account, update_ids=[target])
    (first,) = [b for b in delivered(sandbox, inbox) if events_of([b]) == ["activities.updated"]]
    harness.receive_webhook(first)
    harness.drain()
    # When X is updated again and Argyle's webhook is byte-identical to the first one
    sandbox.periodic_scan(account, update_ids=[target])
    (second,) = [b for b in delivered(sandbox, inbox) if events_of([b]) == ["activities.updated"]]
    assert second == first
    harness.receive_webhook(second)
    harness.drain()
    # Then it was read again (it arrived after the first read), and the copy has the second update
    assert stored(stack_in_process, account)[target] == truth(sandbox, account)[target]
    assert stored(stack_in_process, account) == truth(sandbox, account)


def test_one_failing_record_fails_alone_and_its_group_waits(stack_in_process: StackResources,
                                                            sandbox: SandboxServer, harness: SyncHarness):
    # Given four webhooks in one batch: a bad account's added and another event of that account,
    # then two other accounts' fully_synced; Argyle stays unavailable for the bad account only
    _, good = sandbox.connect_account(n_activities=30)
    _, other = sandbox.connect_account(n_activities=30)
    bad = "00000000-0000-0000-0000-00000000dead"
    bad_body = json.dumps({"event": "activities.added", "name": "t", "data": {
        "account": bad, "user": "u", "added_from": "2024-01-01T00:00:00Z", "added_to": "2024-01-02T00:00:00Z",
        "added_count": 1, "available_from": None, "available_to": None, "available_count": 1}}).encode()
    follow_up = json.dumps({"event": "accounts.updated", "name": "t", "data": {"account": bad}}).encode()
    for body in (bad_body, fully_synced_body(sandbox, good), follow_up, fully_synced_body(sandbox, other)):
        harness.receive_webhook(body)
    messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10,
                                           AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    assert len(messages) == 4
    # When one invocation processes the batch with Argyle failing the bad account's listing
    harness.runtime.sync.ctx.argyle = _FailingFor(harness.runtime.sync.ctx.argyle, bad)  # type: ignore[assignment]
    failed = harness.invoke(messages, FakeLambdaContext())
    # Then only the bad record and the one queued after it in its group are reported failed
    by_body = {m["MessageId"]: m["Body"].encode() for m in messages}
    assert {by_body[i] for i in failed} == {bad_body, follow_up}
    # And the other accounts were committed in the same invocation
    assert stored(stack_in_process, good) == truth(sandbox, good)
    assert stored(stack_in_process, other) == truth(sandbox, other)
    assert state_store(stack_in_process).event_counts() == {"activities.fully_synced": 2}


class _FailingFor:
    """Argyle's client, except that listing one account raises as Argyle's 5xx would."""

    def __init__(self, client: Any, account: str) -> None:
        self._client, self._account = client, account

    def list_activity_pages(self, account: str | None, *args: Any, **kwargs: Any) -> Any:
        from argyle_pipeline.argyle.client import ArgyleUnavailable

        if account == self._account:
            raise ArgyleUnavailable("GET /activities: HTTP 503 after 4 attempt(s)", status=503)
        return self._client.list_activity_pages(account, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_the_handler_built_from_its_environment_syncs_a_lambda_shaped_event(
        stack_in_process: StackResources, sandbox: SandboxServer, harness: SyncHarness):
    # Given the handler as deployed: settings from the environment, API keys from Secrets Manager
    sync_handler.set_runtime(None)
    _, account = sandbox.connect_account(n_activities=12)
    body = fully_synced_body(sandbox, account)
    # When Lambda hands it one record in exactly its event shape
    event = sqs_event([{
        "messageId": "m-1", "receiptHandle": "r-1", "body": body.decode(),
        "attributes": {"MessageGroupId": f"account:{account}", "ApproximateReceiveCount": "1"},
        "messageAttributes": {
            "event": {"stringValue": "activities.fully_synced", "dataType": "String"},
            "dedupe_key": {"stringValue": "ignored-the-body-is-hashed", "dataType": "String"},
            "correlation_id": {"stringValue": "corr-42", "dataType": "String"},
            "received_at_ms": {"stringValue": "1700000000000", "dataType": "Number"},
            "body_encoding": {"stringValue": "raw", "dataType": "String"}},
        "eventSourceARN": harness.queue_arn}])
    response = sync_handler.lambda_handler(event, FakeLambdaContext())
    # Then it reports no failure and the account's activities are Argyle's
    assert response == {"batchItemFailures": []}
    assert stored(stack_in_process, account) == truth(sandbox, account)
