"""The simulated SQS FIFO deduplication window (local_stack.fifo_dedupe_window) on moto's in-process
SQS, with template.yaml's queue and a clock the test moves."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from argyle_pipeline.aws.event_queue import EventQueue, QueuedEvent
from local_stack.fifo_dedupe_window import FifoDedupeWindow
from local_stack.template_resources import StackResources


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def send(sqs: Any, queue_url: str, dedupe_id: str, group: str = "account:a", body: str = "{}") -> dict[str, Any]:
    return sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageGroupId=group,
                            MessageDeduplicationId=dedupe_id)


def take_all(sqs: Any, queue_url: str) -> list[str]:
    """Receive and delete everything waiting; returns the bodies in order."""
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def windowed(stack_in_process: StackResources, clock: Clock) -> tuple[Any, str, FifoDedupeWindow]:
    window = FifoDedupeWindow(300, clock=clock)
    return window.attach(boto3.client("sqs")), stack_in_process.queue_urls["EventsQueue"], window


def test_an_id_seen_within_the_window_is_accepted_but_never_delivered_even_after_the_first_was_deleted(
        windowed: tuple[Any, str, FifoDedupeWindow], clock: Clock):
    sqs, queue_url, window = windowed
    # Given a message sent, received and deleted
    first = send(sqs, queue_url, "id-1", body='{"n": 1}')
    assert take_all(sqs, queue_url) == ['{"n": 1}']
    # When the same deduplication id is sent again 299 seconds later
    clock.now += 299
    again = send(sqs, queue_url, "id-1", body='{"n": 2}')
    # Then SQS's answer is a success naming the first message, and nothing is delivered
    assert again["MessageId"] == first["MessageId"]
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert take_all(sqs, queue_url) == []
    assert window.dropped == 1


def test_the_window_runs_from_the_first_send_and_then_lets_the_id_through(
        windowed: tuple[Any, str, FifoDedupeWindow], clock: Clock):
    sqs, queue_url, window = windowed
    send(sqs, queue_url, "id-1", body="first")
    take_all(sqs, queue_url)
    # A re-send inside the window does not extend it
    clock.now += 200
    send(sqs, queue_url, "id-1", body="dropped")
    # When the id is sent 300 seconds after its first send
    clock.now += 100
    send(sqs, queue_url, "id-1", body="after the window")
    # Then that one is a new message
    assert take_all(sqs, queue_url) == ["after the window"]
    assert window.dropped == 1


def test_the_template_queue_deduplicates_per_message_group(windowed: tuple[Any, str, FifoDedupeWindow]):
    # Given template.yaml's queue (DeduplicationScope: messageGroup)
    sqs, queue_url, _ = windowed
    send(sqs, queue_url, "id-1", group="account:a", body="a")
    take_all(sqs, queue_url)
    # When the same id is sent in another group, and again in the first
    send(sqs, queue_url, "id-1", group="account:b", body="b")
    send(sqs, queue_url, "id-1", group="account:a", body="a again")
    # Then only the other group's message is delivered
    assert take_all(sqs, queue_url) == ["b"]


def test_a_batch_sends_only_its_new_entries_and_answers_the_rest_from_the_window(
        windowed: tuple[Any, str, FifoDedupeWindow]):
    sqs, queue_url, window = windowed
    first = send(sqs, queue_url, "seen", body="first")
    take_all(sqs, queue_url)
    # When a batch repeats the seen id beside a new one
    answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
        {"Id": "0", "MessageBody": "repeat", "MessageGroupId": "account:a", "MessageDeduplicationId": "seen"},
        {"Id": "1", "MessageBody": "new", "MessageGroupId": "account:a", "MessageDeduplicationId": "new"}])
    # Then both entries succeed, the repeat naming the first message, and only the new one is delivered
    ids = {item["Id"]: item["MessageId"] for item in answer["Successful"]}
    assert set(ids) == {"0", "1"} and ids["0"] == first["MessageId"] and not answer.get("Failed")
    assert take_all(sqs, queue_url) == ["new"]
    # And a batch of seen ids only is answered without reaching the queue
    answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
        {"Id": "a", "MessageBody": "x", "MessageGroupId": "account:a", "MessageDeduplicationId": "seen"},
        {"Id": "b", "MessageBody": "y", "MessageGroupId": "account:a", "MessageDeduplicationId": "new"}])
    assert {item["Id"] for item in answer["Successful"]} == {"a", "b"}
    assert take_all(sqs, queue_url) == []
    assert window.dropped == 3


def test_content_based_deduplication_uses_the_body_hash_queue_wide(moto_in_process: None, clock: Clock):
    # Given a FIFO queue with content-based deduplication and the default (queue) scope
    sqs = FifoDedupeWindow(300, clock=clock).attach(boto3.client("sqs"))
    queue_url = sqs.create_queue(QueueName="content.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="same", MessageGroupId="g1")
    take_all(sqs, queue_url)
    # When the same body is sent without an id, in another group, and a different body too
    sqs.send_message(QueueUrl=queue_url, MessageBody="same", MessageGroupId="g2")
    sqs.send_message(QueueUrl=queue_url, MessageBody="other", MessageGroupId="g2")
    # Then only the different body is delivered
    assert take_all(sqs, queue_url) == ["other"]


def test_a_failed_send_is_not_remembered(windowed: tuple[Any, str, FifoDedupeWindow]):
    sqs, queue_url, _ = windowed
    # Given a send SQS refuses (no group id on a FIFO queue)
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.send_message(QueueUrl=queue_url, MessageBody="refused", MessageDeduplicationId="id-1")
    # Then the id was never "seen": the next send with it is delivered
    send(sqs, queue_url, "id-1", body="delivered")
    assert take_all(sqs, queue_url) == ["delivered"]


def test_the_receivers_queue_sends_through_the_client_the_window_is_attached_to(
        stack_in_process: StackResources, clock: Clock):
    # Given the receiver's EventQueue, and the window put on its client as the local stack does
    queue_url = stack_in_process.queue_urls["EventsQueue"]
    queue = EventQueue(queue_url, client=boto3.client("sqs"))
    window = FifoDedupeWindow(300, clock=clock)
    window.attach(queue.client)
    event = QueuedEvent(body=b'{"event": "activities.added"}', event_name="activities.added", group_id="account:a",
                        dedupe_key="k" * 64, correlation_id="req-1", received_at_ms=1, deduplication_id="d" * 64)
    # When one delivery is sent, received and deleted, then sent again within the window
    first = queue.send(event)
    assert take_all(queue.client, queue_url) == ['{"event": "activities.added"}']
    clock.now += 60
    again = queue.send(event)
    # Then the re-send is answered with the first message's id and never delivered
    assert again == first and window.dropped == 1
    assert take_all(queue.client, queue_url) == []


def test_a_window_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        FifoDedupeWindow(0)
