"""What a repeated body costs with the real parts: the sync handler and Powertools Idempotency on
template.yaml's tables (moto), the Argyle sandbox over HTTP, SQS's deduplication window on the
harness's client. The rules themselves are in tests/unit/test_duplicate_deliveries.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import sync_handler
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, RecordingServer, sandbox, webhook_inbox  # noqa: F401
from tests.support.sync_harness import WEBHOOK_SECRET, SyncHarness


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


def deliver_all(sandbox: SandboxServer, inbox: RecordingServer, harness: SyncHarness) -> list[bytes]:
    sandbox.wait_for_deliveries(20)
    bodies = [r.body for r in inbox.requests]
    inbox.requests.clear()
    for body in bodies:
        assert harness.receive_webhook(body) == 202
    return bodies


def test_argyle_retrying_a_processed_update_costs_one_more_read_of_its_ids(
        stack_in_process: StackResources, sandbox: SandboxServer, inbox: RecordingServer, harness: SyncHarness):
    # Given a synced account whose activities.updated for two activities was processed
    _, account = sandbox.connect_account(n_activities=20)
    deliver_all(sandbox, inbox, harness)
    harness.drain()
    tracked = sorted(doc["id"] for doc in sandbox.truth(account))[:2]
    sandbox.periodic_scan(account, update_ids=tracked)
    # (the scan's accounts.updated goes through too)
    (body,) = [b for b in deliver_all(sandbox, inbox, harness) if json.loads(b)["event"] == "activities.updated"]
    harness.drain()
    calls = harness.argyle_calls
    # When Argyle delivers it three more times (our answers lost), all arriving after that run
    for _ in range(3):
        assert harness.receive_webhook(body) == 202
    report = harness.drain()
    # Then all three were consumed, one of them read the two ids again, and the others were
    # covered by that read: one more run, not three
    assert report.processed == 3 and report.failed == 0
    assert harness.argyle_calls - calls == len(tracked)
    assert live_activities(stack_in_process.tables["ActivitiesTable"], account) == {
        doc["id"]: doc for doc in sandbox.truth(account)}
