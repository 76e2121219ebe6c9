"""What `EventQueue.send` tells its caller, and what a `QueuedEvent` is: the receiver logs the
message id of every accepted webhook and the operator tools print it, so a message can be found
on the queue; the body's decoded text a caller may hand over is only a cache of its bytes."""

from __future__ import annotations

from typing import Any

from argyle_pipeline.aws.event_queue import EventQueue, QueuedEvent


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": f"5fea7756-0ea4-451a-a703-a558b933e27{len(self.sent)}"}


def webhook(text: str | None = None) -> QueuedEvent:
    return QueuedEvent(
        body=b'{"event": "activities.added"}',
        event_name="activities.added",
        group_id="account:a",
        dedupe_key="k" * 64,
        correlation_id="req-1",
        received_at_ms=1,
        text=text,
    )


def test_a_sent_event_is_known_by_the_message_id_sqs_gave_it():
    sqs = RecordingSqs()
    queue = EventQueue("https://queue", sqs)

    assert queue.send(webhook()) == "5fea7756-0ea4-451a-a703-a558b933e271"
    assert queue.send(webhook()) == "5fea7756-0ea4-451a-a703-a558b933e272"


def test_an_event_whose_text_was_already_decoded_is_the_same_event_and_prints_the_same():
    # Given the receiver's event, built with the text it decoded, and the same event built from its bytes alone
    decoded = webhook(text='{"event": "activities.added"}')
    from_bytes = webhook()

    # Then they are equal, and printing either (a debugger, a log line) shows the body once, the same way
    assert decoded == from_bytes
    assert repr(decoded) == repr(from_bytes)
