"""The receiver handler against moto's server, with the queue and secret created from template.yaml."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace

import boto3
import pytest

from argyle_pipeline.aws import secret_values
from argyle_pipeline.aws.event_queue import delivery_keys
from argyle_pipeline.aws.secret_values import rotated_webhook_secret_value
from argyle_pipeline.receiving.signature import sign
from local_stack.lambda_runtime import environment, function_environment
from local_stack.template_resources import StackResources
from tests.support.receiver_harness import apigw_event, invoke_receiver, reset_receiver_state

CURRENT, PREVIOUS = "current-secret", "previous-secret"
ACCOUNT = "0187c66e-e7e5-811c-b006-2232f00f426a"


@pytest.fixture
def receiver(stack_on_server: StackResources) -> Iterator[StackResources]:
    """The receiver wired as template.yaml wires it, with a two-secret (rotating) value stored."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack_on_server.secrets["WebhookSecret"],
        SecretString=rotated_webhook_secret_value(CURRENT, PREVIOUS))
    reset_receiver_state()
    with environment(function_environment("ReceiverFunction", stack_on_server)):
        yield stack_on_server
    reset_receiver_state()


def drain(queue_url: str) -> list[dict]:
    sqs = boto3.client("sqs")
    messages: list[dict] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
        if not batch:
            return messages
        for m in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        messages.extend(batch)


def body_for(event: str = "activities.removed") -> bytes:
    # Odd spacing on purpose: what is queued must be these bytes, not a re-rendering
    return (f'{{"event":  "{event}", "name": "Removed",\n "data": {{"account": "{ACCOUNT}", '
            '"removed_activities": ["a1"], "amount": 12.50}}').encode()


def test_genuine_event_reaches_the_fifo_queue_byte_for_byte(receiver: StackResources) -> None:
    # Given a webhook signed with the current secret
    body = body_for()
    # When the receiver handles it
    status, answer = invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, CURRENT)}))
    # Then it answers 202 and the queue holds exactly the raw body, in the account's group
    assert status == 202 and answer["status"] == "accepted"
    (message,) = drain(receiver.queue_urls["EventsQueue"])
    assert message["Body"].encode() == body
    assert message["Attributes"]["MessageGroupId"] == f"account:{ACCOUNT}"
    import hashlib

    assert message["Attributes"]["MessageDeduplicationId"] == delivery_keys(body, "req-1")[1]
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attrs["event"] == "activities.removed"
    assert attrs["dedupe_key"] == hashlib.sha256(body).hexdigest()
    assert attrs["correlation_id"] == "req-1"
    assert attrs["body_encoding"] == "raw"


def test_previous_secret_still_accepted_during_rotation(receiver: StackResources) -> None:
    body = body_for("activities.added")
    status, _ = invoke_receiver(apigw_event(body, {"x-argyle-signature": sign(body, PREVIOUS)}, as_base64=True))
    assert status == 202
    (message,) = drain(receiver.queue_urls["EventsQueue"])
    assert message["Body"].encode() == body


def test_each_delivery_is_queued_and_a_resend_of_one_is_dropped(receiver: StackResources) -> None:
    # Given one body delivered three times by Argyle (three HTTP requests: three request ids)
    body = body_for("activities.added")
    headers = {"X-Argyle-Signature": sign(body, CURRENT)}
    for request_id in ("req-1", "req-2", "req-3"):
        assert invoke_receiver(apigw_event(body, headers, request_id=request_id))[0] == 202
    # And the first delivery's send repeated (as when SQS's answer to it was lost)
    assert invoke_receiver(apigw_event(body, headers, request_id="req-1"))[0] == 202
    # Then every delivery is a message (the sync decides what a repeated body needs), and the
    # repeated send of one delivery is not
    messages = drain(receiver.queue_urls["EventsQueue"])
    assert [m["MessageAttributes"]["correlation_id"]["StringValue"] for m in messages] == ["req-1", "req-2", "req-3"]
    assert {m["Body"].encode() for m in messages} == {body}


def test_forged_request_leaves_the_queue_empty(receiver: StackResources) -> None:
    body = body_for()
    status, answer = invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, "attacker")}))
    assert (status, answer) == (401, {"error": "invalid signature"})
    status, _ = invoke_receiver(apigw_event(body, {}))
    assert status == 401
    assert drain(receiver.queue_urls["EventsQueue"]) == []


def test_sqs_failure_answers_5xx(receiver: StackResources) -> None:
    # Given the queue is gone (SQS answers an error for every send)
    boto3.client("sqs").delete_queue(QueueUrl=receiver.queue_urls["EventsQueue"])
    body = body_for()
    # Then the receiver does not pretend: 503, so Argyle retries
    status, answer = invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, CURRENT)}))
    assert status == 503
    assert "retry" in answer["error"]


def test_unreadable_secret_answers_5xx_not_401(receiver: StackResources) -> None:
    # A transient Secrets Manager failure must not turn genuine events away for good
    boto3.client("secretsmanager").delete_secret(SecretId=receiver.secrets["WebhookSecret"],
                                                 ForceDeleteWithoutRecovery=True)
    body = body_for()
    status, _ = invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, CURRENT)}))
    assert status == 503
    assert drain(receiver.queue_urls["EventsQueue"]) == []


def test_secret_is_cached_not_read_per_request(receiver: StackResources) -> None:
    # Given one accepted request (which reads and caches the secret)
    body = body_for("activities.added")
    assert invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, CURRENT)}))[0] == 202
    # When the secret disappears from Secrets Manager
    boto3.client("secretsmanager").delete_secret(SecretId=receiver.secrets["WebhookSecret"],
                                                 ForceDeleteWithoutRecovery=True)
    # Then warm requests still verify from the cache
    other = body_for("activities.updated")
    assert invoke_receiver(apigw_event(other, {"X-Argyle-Signature": sign(other, CURRENT)}))[0] == 202


def test_rotation_is_picked_up_at_once_despite_the_cache(receiver: StackResources) -> None:
    # Given a warm receiver that cached the old secrets
    first = body_for("activities.added")
    assert invoke_receiver(apigw_event(first, {"X-Argyle-Signature": sign(first, CURRENT)}))[0] == 202
    # When the secret is rotated (new current, old current kept as previous)
    boto3.client("secretsmanager").put_secret_value(
        SecretId=receiver.secrets["WebhookSecret"],
        SecretString=rotated_webhook_secret_value("rotated", json.dumps({"current": CURRENT})))
    # Then a webhook signed with the new secret is accepted straight away, and the old one still is
    fresh = body_for("activities.updated")
    assert invoke_receiver(apigw_event(fresh, {"X-Argyle-Signature": sign(fresh, "rotated")}))[0] == 202
    old = body_for("activities.fully_synced")
    assert invoke_receiver(apigw_event(old, {"X-Argyle-Signature": sign(old, CURRENT)}))[0] == 202


def test_an_expired_previous_no_longer_verifies_even_from_the_cache(receiver: StackResources,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a rotation whose previous secret stays valid for an hour, read into the receiver's cache
    # by a delivery signed with it
    now = time.time()
    boto3.client("secretsmanager").put_secret_value(
        SecretId=receiver.secrets["WebhookSecret"],
        SecretString=rotated_webhook_secret_value("rotated", json.dumps({"current": CURRENT}),
                                                  previous_valid_seconds=3600, now=now))
    late = body_for("activities.added")
    assert invoke_receiver(apigw_event(late, {"X-Argyle-Signature": sign(late, CURRENT)}))[0] == 202
    drain(receiver.queue_urls["EventsQueue"])
    # When the hour has passed (the cached value, and Secrets Manager's, still hold the old secret)
    monkeypatch.setattr(secret_values, "time", SimpleNamespace(time=lambda: now + 3601, monotonic=time.monotonic))
    # Then a delivery signed with the old secret is 401 and nothing is queued; the new one still verifies
    later = body_for("activities.updated")
    status, answer = invoke_receiver(apigw_event(later, {"X-Argyle-Signature": sign(later, CURRENT)}))
    assert (status, answer["error"]) == (401, "invalid signature")
    assert drain(receiver.queue_urls["EventsQueue"]) == []
    assert invoke_receiver(apigw_event(later, {"X-Argyle-Signature": sign(later, "rotated")}))[0] == 202


def test_an_accepted_webhook_is_logged_and_counted_as_accepted_a_forged_one_as_rejected(
        receiver: StackResources, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a genuine webhook and a forged one
    body = body_for("activities.added")
    capsys.readouterr()
    # When the receiver handles both
    invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, CURRENT)}))
    invoke_receiver(apigw_event(body, {"X-Argyle-Signature": sign(body, "attacker")}))
    # Then each is one line: the genuine one counted in WebhookAccepted by event, the forged one in
    # WebhookRejected by reason (the dashboard's and the alarms' figures)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"webhook ' in line]
    assert [(line["message"], line.get("WebhookAccepted"), line.get("WebhookRejected")) for line in lines] == [
        ("webhook accepted", 1, None), ("webhook rejected", None, 1)]
    assert lines[0]["event"] == "activities.added" and lines[1]["reason"] == "signature_mismatch"
    assert lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "WebhookAccepted", "Unit": "Count"}]
