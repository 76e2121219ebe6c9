"""A message that keeps failing ends in the DLQ; once the cause is fixed, the redrive puts it back
and it syncs (the sandbox over HTTP, the queues and tables of template.yaml in moto)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

import sync_handler
from argyle_ops.redrive import redrive
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET
from tests.support.sync_harness import SyncHarness, fully_synced_body


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=3, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET) as server:
        yield server
    sync_handler.set_runtime(None)


def test_wrong_api_keys_send_the_message_to_the_dlq_and_a_redrive_recovers_it(
        stack_in_process: StackResources, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch):
    # Given the sync configured with API keys Argyle rejects (401)
    broken = SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                         api_key_secret="not-the-secret")
    _, account = sandbox.connect_account(n_activities=30)
    body = fully_synced_body(sandbox, account)
    broken.receive_webhook(body)
    # When the queue is drained: each receive fails, and after maxReceiveCount (5) SQS gives up
    report = broken.drain()
    # Then the message waits in the DLQ, and nothing was stored
    assert report.failed == 5 and report.processed == 0
    assert broken.dlq_bodies() == [body.decode()]
    assert live_activities(stack_in_process.tables["ActivitiesTable"], account) == {}
    # When the keys are fixed and the DLQ is redriven
    fixed = SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                        api_key_secret=SANDBOX_KEY_SECRET)
    result = redrive(boto3.client("sqs"), fixed.dlq_url, fixed.queue_url)
    report = fixed.drain()
    # Then the message is processed and the account's activities are stored
    assert result.moved == 1 and report.processed == 1
    assert fixed.dlq_bodies() == []
    assert live_activities(stack_in_process.tables["ActivitiesTable"], account) == {
        doc["id"]: doc for doc in sandbox.truth(account)}
