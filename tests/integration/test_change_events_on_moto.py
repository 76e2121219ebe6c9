"""Change events end to end: the sync handler with the real DynamoDB stores on moto's server, the
Argyle sandbox over HTTP, and an EventBridge bus whose rule (docs/change-events.md's example)
sends the events to an SQS queue, where the test reads what a consumer would get."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import sync_handler
from argyle_pipeline.sync.change_events import SOURCE
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, RecordingServer, recorder  # noqa: F401
from tests.support.sync_harness import SyncHarness, fully_synced_body


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=23, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET) as server:
        yield server


@pytest.fixture
def consumer_queue(stack_on_server: StackResources, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bus, a rule on the events' source, and an SQS queue as its target; CHANGE_EVENT_BUS names the bus."""
    name = f"changes-{uuid.uuid4().hex[:12]}"
    events, sqs = boto3.client("events"), boto3.client("sqs")
    events.create_event_bus(Name=name)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-changes", EventBusName=name, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="all-changes", EventBusName=name, Targets=[{"Id": "consumer", "Arn": queue_arn}])
    monkeypatch.setenv("CHANGE_EVENT_BUS", name)
    return queue_url


@pytest.fixture
def harness(stack_on_server: StackResources, sandbox: SandboxServer, consumer_queue: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    yield SyncHarness(stack_on_server, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                      api_key_secret=SANDBOX_KEY_SECRET)
    sync_handler.set_runtime(None)


def consumed(queue_url: str) -> list[dict[str, Any]]:
    """Every event the rule delivered so far (EventBridge's envelope, parsed)."""
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for m in messages:
            found.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return found


def changed_ids(events: list[dict[str, Any]]) -> list[tuple[list[str], list[str], list[str]]]:
    return [(e["detail"]["added"], e["detail"]["updated"], e["detail"]["removed"])
            for e in events if e["detail-type"] == "activities.changed"]


def scan_webhooks(sandbox: SandboxServer, recorder: RecordingServer, **changes: Any) -> list[bytes]:
    """A periodic scan at Argyle; the bodies of the activities.* webhooks it sent."""
    before = len(recorder.requests)
    sandbox.periodic_scan(sandbox_account(sandbox), **changes)
    sandbox.wait_for_deliveries(timeout=20)
    return [r.body for r in recorder.requests[before:] if b'"activities.' in r.body]


def sandbox_account(sandbox: SandboxServer) -> str:
    return next(iter(sandbox.state.accounts))


def test_each_real_change_is_published_once_and_a_duplicate_or_relisting_publishes_nothing(
        harness: SyncHarness, sandbox: SandboxServer, consumer_queue: str,
        recorder: RecordingServer) -> None:
    _, account = sandbox.connect_account(n_activities=12)
    sandbox.subscribe(recorder.url, events=["*"], secret="s")
    truth = {a["id"] for a in sandbox.truth(account)}
    # Given the account's first sync, its webhook delivered twice before the sync ran (the second
    # copy finds the first's stored outcome, changes and all, and must not publish them again)
    body = fully_synced_body(sandbox, account)
    harness.receive_webhook(body)
    harness.receive_webhook(body)
    assert harness.drain().processed == 2
    # Then every activity is added once, and the account exact for the first time
    first = consumed(consumer_queue)
    assert [e["detail-type"] for e in first] == ["activities.changed", "account.synced"]
    assert {e["source"] for e in first} == {SOURCE}
    assert set(first[0]["detail"]["added"]) == truth and first[0]["detail"]["counts"]["added"] == 12
    # When the same webhook is delivered twice more (Argyle's retries: new deliveries)
    harness.receive_webhook(body)
    harness.receive_webhook(body)
    calls = harness.argyle_calls
    report = harness.drain()
    # Then the first copy re-listed the unchanged account (received after the first run began), the
    # second found that re-run's stored outcome, and neither published anything
    assert report.processed == 2 and harness.argyle_calls > calls
    assert consumed(consumer_queue) == []

    # When Argyle's scan adds one, updates one and removes one, and its webhooks arrive
    bodies = scan_webhooks(sandbox, recorder, add=1, update=1, remove=1)
    assert len(bodies) == 3
    for webhook in bodies:
        harness.receive_webhook(webhook)
    assert harness.drain().failed == 0
    # Then each change is published exactly once, with ids only
    changes = changed_ids(consumed(consumer_queue))
    added = [i for a, _, _ in changes for i in a]
    updated = [i for _, u, _ in changes for i in u]
    removed = [i for _, _, r in changes for i in r]
    now = {a["id"] for a in sandbox.truth(account)}
    assert len(added) == len(updated) == len(removed) == 1
    assert added[0] in now - truth and removed[0] in truth - now and updated[0] in now & truth
