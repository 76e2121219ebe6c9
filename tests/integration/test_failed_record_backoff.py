"""A failed record comes back after its retry delay instead of the queue's 90-minute visibility
timeout, and after its last attempt SQS moves it to the DLQ at once: the sync handler on
template.yaml's queue in moto's server, the Argyle sandbox over HTTP answering 500 (delays scaled
down to seconds)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sync_handler
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.lambda_events import FakeLambdaContext, record_from_sqs_message, sqs_event, sqs_record
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET
from tests.support.sync_harness import SyncHarness, fully_synced_body

FIRST_DELAY = 2


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=9, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET) as server:
        yield server


@pytest.fixture
def harness(stack_on_server: StackResources, sandbox: SandboxServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    # The deployed schedule is 30 s, 2 min, 8 min, 30 min; the same rule, in seconds
    monkeypatch.setenv("RETRY_DELAYS_SECONDS", f"{FIRST_DELAY},1")
    yield SyncHarness(stack_on_server, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                      api_key_secret=SANDBOX_KEY_SECRET)
    sync_handler.set_runtime(None)


def receive(harness: SyncHarness, queue_url: str | None = None) -> list[dict[str, Any]]:
    return harness.sqs.receive_message(QueueUrl=queue_url or harness.queue_url, MaxNumberOfMessages=10,
                                       AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])


def wait_for_messages(harness: SyncHarness, deadline_seconds: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_seconds
    while not (messages := receive(harness)):
        assert time.monotonic() < deadline, "the failed records did not come back"
        time.sleep(0.1)
    return messages


def invoke(harness: SyncHarness, messages: list[dict[str, Any]]) -> dict[str, Any]:
    event = sqs_event([record_from_sqs_message(m, harness.queue_arn) for m in messages])
    return sync_handler.lambda_handler(event, FakeLambdaContext())


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "argyle-sync" and hasattr(r, "attempt")]


def test_a_failed_record_and_the_rest_of_its_group_come_back_after_the_first_delay(
        harness: SyncHarness, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    # Given an account's fully_synced and a later event of the same account, and Argyle answering 500
    _, account = sandbox.connect_account(n_activities=20)
    first, second = fully_synced_body(sandbox, account), json.dumps(
        {"event": "accounts.updated", "name": "t", "data": {"account": account}}).encode()
    harness.receive_webhook(first)
    harness.receive_webhook(second)
    sandbox.faults.update({"fail_every": 1})
    messages = receive(harness)
    assert [m["Body"].encode() for m in messages] == [first, second]
    # When one invocation fails the first record (and so skips the second, behind it in its group)
    response = invoke(harness, messages)
    failed_at = time.monotonic()
    # Then both are reported failed, not raised as a failed invocation
    assert response == {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
    # And the queue holds them back for the first delay only, then hands them out again in order
    assert receive(harness) == []
    again = wait_for_messages(harness)
    waited = time.monotonic() - failed_at
    assert FIRST_DELAY - 0.5 <= waited < 20
    assert [m["Body"].encode() for m in again] == [first, second]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again] == ["2", "2"]
    # And the failure is one line saying why, which attempt of how many, and when it comes back;
    # the record skipped behind it says so
    (line,) = failure_lines(caplog)
    assert (line.attempt, line.max_attempts, line.retry_in_seconds) == (1, 5, FIRST_DELAY)
    assert "HTTP 500" in line.reason and line.error == "ArgyleUnavailable"
    assert line.group_id == f"account:{account}" and line.event_name == "activities.fully_synced"
    skipped = [r for r in caplog.records if r.getMessage().startswith("record skipped")]
    assert [r.event_name for r in skipped] == ["accounts.updated"]


def test_a_record_that_always_fails_reaches_the_dlq_right_after_its_fifth_attempt(
        harness: SyncHarness, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    # Given a webhook whose every sync attempt fails (Argyle answers 500)
    _, account = sandbox.connect_account(n_activities=20)
    body = fully_synced_body(sandbox, account)
    harness.receive_webhook(body)
    sandbox.faults.update({"fail_every": 1})
    started = time.monotonic()
    # When it is attempted as often as SQS hands it out
    attempts = 0
    while attempts < 5:
        invoke(harness, wait_for_messages(harness))
        attempts += 1
    # Then after the fifth failure the next receive moves it to the DLQ (no 90-minute wait)
    deadline = time.monotonic() + 10
    while not (dead := receive(harness, harness.dlq_url)):
        assert receive(harness) == [], "handed out a sixth time"
        assert time.monotonic() < deadline, "the record did not reach the DLQ"
        time.sleep(0.1)
    assert [m["Body"].encode() for m in dead] == [body]
    assert time.monotonic() - started < 30  # delays of 2 + 1 + 1 + 1 s, then at once
    # And the lines say so: attempts 1 to 4 come back after their delay, the fifth goes to the DLQ
    lines = failure_lines(caplog)
    assert [r.attempt for r in lines] == [1, 2, 3, 4, 5]
    assert [getattr(r, "retry_in_seconds", None) for r in lines] == [FIRST_DELAY, 1, 1, 1, None]
    assert lines[-1].levelname == "ERROR" and "DLQ" in lines[-1].getMessage()


def test_a_retry_delay_sqs_refuses_still_reports_the_failure(
        harness: SyncHarness, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    # Given a record whose receipt handle SQS does not know (as after its visibility timed out)
    sandbox.faults.update({"fail_every": 1})
    _, account = sandbox.connect_account(n_activities=5)
    record = sqs_record(fully_synced_body(sandbox, account).decode(), group_id=f"account:{account}")
    # When it fails
    response = sync_handler.lambda_handler(sqs_event([record]), FakeLambdaContext())
    # Then it is still reported failed (SQS retries it after the visibility timeout), and the
    # refused delay is logged, not raised
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    refused = [r for r in caplog.records if r.getMessage().startswith("could not set the retry delay")]
    assert len(refused) == 1 and refused[0].records == 1
