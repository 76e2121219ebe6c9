"""No item that concurrent records share, and DynamoDB's load errors cost no record.

DynamoDB cancels concurrent transactions on one item (TransactionConflict) and throttles a hot
partition; moto does neither, so these tests inject them with a botocore hook on the sync's own
DynamoDB client (tests/support/dynamodb_fault_hook.py): botocore parses and retries the injected
answers by the client's rules, as it would AWS's. Argyle is the sandbox over HTTP; the queue and
tables are template.yaml's in moto's server; the queue is drained through the handler.
"""

from __future__ import annotations

import hashlib
import json
import types
from collections import defaultdict
from collections.abc import Iterator

import boto3
import botocore.endpoint
import pytest

import sync_handler
from argyle_pipeline.aws.dynamodb_client import sync_dynamodb_client
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.dynamodb_fault_hook import DynamoDBFaultHook
from tests.support.lambda_events import FakeLambdaContext
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, RecordingServer, webhook_inbox
from tests.support.sync_harness import WEBHOOK_SECRET, DrainReport, SyncHarness

LOAD_ERRORS = ["ProvisionedThroughputExceededException", "ThrottlingException", "TransactionConflictException"]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=16, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET,
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        yield server


@pytest.fixture
def inbox(sandbox: SandboxServer) -> Iterator[RecordingServer]:
    with webhook_inbox(sandbox, WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
def botocore_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's retry waits, recorded instead of slept (only botocore's endpoint sees this)."""
    waits: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=waits.append))
    return waits


def connect_accounts(sandbox: SandboxServer, inbox: RecordingServer) -> tuple[list[str], list[bytes]]:
    """Three users, five accounts (two users with two each), then a scan of every account."""
    accounts = []
    for user, n in (("user-a", 40), ("user-a", 25), ("user-b", 30), ("user-b", 5), ("user-c", 60)):
        accounts.append(sandbox.connect_account(user, n_activities=n)[1])
    for account in accounts:
        sandbox.periodic_scan(account, add=3, update=2, remove=1)
    sandbox.wait_for_deliveries(20)
    bodies = [r.body for r in inbox.requests]
    inbox.requests.clear()
    return accounts, bodies


def drain_one_record_at_a_time(harness: SyncHarness, hook: DynamoDBFaultHook) -> DrainReport:
    """As Lambda would, but one record per invocation, each call labelled with its message group."""
    report = DrainReport()
    while report.invocations < 500:
        messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=1,
                                               AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages")
        if not messages:
            return report
        hook.label = messages[0]["Attributes"]["MessageGroupId"]
        harness.invoke(messages, FakeLambdaContext(), report)
    raise AssertionError("the queue does not drain")


def test_no_item_is_written_by_two_message_groups_and_load_errors_fail_no_record(
        stack_on_server: StackResources, sandbox: SandboxServer, inbox: RecordingServer,
        monkeypatch: pytest.MonkeyPatch, botocore_waits: list[float]) -> None:
    # Given the sync's own DynamoDB client (as the handler makes it), answering now and then with
    # a throttle or a transaction conflict: requests 3, 10, 17... of each operation, in turn
    def plan(operation: str, n: int) -> str | None:
        return LOAD_ERRORS[(n // 7) % len(LOAD_ERRORS)] if n % 7 == 3 else None

    hook = DynamoDBFaultHook(plan=plan)
    client = hook.attach(sync_dynamodb_client())
    harness = SyncHarness(stack_on_server, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                          api_key_secret=SANDBOX_KEY_SECRET, dynamodb=client)
    # (the idempotency records through the same client too, as in the function)
    harness.runtime = sync_handler.build_runtime(
        sync_handler.sync_settings(), argyle=harness.clients[0], fetchers=harness.clients[1:], dynamodb=client,
        sqs=harness.sqs, sleep=harness.sleeps)
    sync_handler.set_runtime(harness.runtime)
    try:
        accounts, bodies = connect_accounts(sandbox, inbox)
        for body in bodies:
            assert harness.receive_webhook(body) == 202
        # When the queue drains, one record per invocation
        report = drain_one_record_at_a_time(harness, hook)
    finally:
        sync_handler.set_runtime(None)
    # Then every kind of load error was injected, on writes and reads, and botocore waited before retrying
    injected = hook.injected
    assert {code.split(":")[1] for code in injected} == set(LOAD_ERRORS)
    assert {"PutItem", "UpdateItem", "GetItem", "BatchWriteItem"} <= {code.split(":")[0] for code in injected}
    assert len(botocore_waits) == len(injected) and all(w >= 0 for w in botocore_waits)
    # And no record failed: each error was retried inside its call, none was lost
    assert report.failed == 0
    assert harness.dlq_bodies() == []
    for account in accounts:
        assert live_activities(stack_on_server.tables["ActivitiesTable"], account) == {
            doc["id"]: doc for doc in sandbox.truth(account)}
    # And every distinct body was counted once (a repeated body shares its dedupe key)
    distinct = {hashlib.sha256(b).hexdigest(): json.loads(b)["event"] for b in bodies}
    expected: dict[str, int] = defaultdict(int)
    for event in distinct.values():
        expected[event] += 1
    assert SyncStateStore(stack_on_server.tables["SyncStateTable"], boto3.client("dynamodb")).event_counts() == \
        dict(expected)
    # And no transaction ran, and no item was written by the records of two message groups
    assert not [c for c in hook.calls if c.operation == "TransactWriteItems"]
    writers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for call in hook.calls:
        for key in call.keys:
            writers[key].add(call.label)
    shared = {key: groups for key, groups in writers.items() if len(groups) > 1}
    assert shared == {}
    assert len({c.label for c in hook.calls}) >= len(accounts) + 3  # every account's and user's group ran


def test_a_transaction_cancelled_by_a_conflict_is_retried_by_the_client(
        stack_on_server: StackResources, botocore_waits: list[float]) -> None:
    # Given the sync's DynamoDB client, whose first TransactWriteItems meets a conflict
    hook = DynamoDBFaultHook(plan=lambda operation, n: "TransactionConflict" if n == 1 else None)
    client = hook.attach(sync_dynamodb_client())
    table = stack_on_server.tables["SyncStateTable"]
    # When it writes two items in one transaction
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": table, "Item": {"pk": {"S": "T#1"}, "sk": {"S": "A"}}}},
        {"Put": {"TableName": table, "Item": {"pk": {"S": "T#2"}, "sk": {"S": "A"}}}}])
    # Then the cancelled attempt was retried after a short wait, and both items are there
    assert hook.injected == ["TransactWriteItems:TransactionConflict"]
    assert len(botocore_waits) == 1 and 0 <= botocore_waits[0] <= 1.0
    assert [c.operation for c in hook.calls] == ["TransactWriteItems"] * 2
    for pk in ("T#1", "T#2"):
        assert "Item" in client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "A"}})


def test_a_conflict_that_outlasts_the_attempts_is_raised(stack_on_server: StackResources,
                                                         botocore_waits: list[float]) -> None:
    # Given a client whose every request meets a conflict
    from botocore.exceptions import ClientError

    hook = DynamoDBFaultHook(plan=lambda operation, n: "TransactionConflictException")
    client = hook.attach(sync_dynamodb_client(max_attempts=3))
    # When it writes, then it gives up after its 3 attempts and raises (the record fails and SQS retries it)
    with pytest.raises(ClientError, match="TransactionConflictException"):
        client.put_item(TableName=stack_on_server.tables["SyncStateTable"],
                        Item={"pk": {"S": "T#3"}, "sk": {"S": "A"}})
    assert len(hook.calls) == 3 and len(botocore_waits) == 2
