"""The queue refuses what SQS would refuse, before sending it: SQS's limit is 256 KiB (262,144
bytes) for the body and every attribute together. A message over it that reached SQS would fail
there, and the receiver would answer 503 (Argyle retries it for ever) instead of 413."""

from __future__ import annotations

from typing import Any

import pytest

from argyle_pipeline.aws.event_queue import (
    EventQueue,
    MessageTooLarge,
    QueuedEvent,
    attribute_text,
    decode_body,
    encode_body,
)

SQS_LIMIT = 262_144


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": f"m-{len(self.sent)}"}


def event_of_size(size: int) -> QueuedEvent:
    """A text webhook whose message (body and attributes) is `size` bytes as SQS counts them."""
    def event(body_length: int) -> QueuedEvent:
        return QueuedEvent(body=b"x" * body_length, event_name="activities.added", group_id="account:a",
                           dedupe_key="k" * 64, correlation_id="req-1", received_at_ms=1, text="x" * body_length)

    overhead = event(1).size() - 1
    made = event(size - overhead)
    assert made.size() == size
    return made


def base64_event_of_size(size: int) -> QueuedEvent:
    """A webhook SQS cannot carry as text (it holds U+FFFE, valid JSON), so it travels as base64,
    4/3 its size; its message (encoded body and attributes) is `size` bytes as SQS counts them."""

    def event(body_length: int, correlation_id: str) -> QueuedEvent:
        body = '{"note": "\ufffe'.encode() + b"x" * (body_length - 15) + b'"}'
        return QueuedEvent(
            body=body,
            event_name="activities.added",
            group_id="account:a",
            dedupe_key="k" * 64,
            correlation_id=correlation_id,
            received_at_ms=1,
        )

    def overhead(correlation_id: str) -> int:  # the attributes: a 300-byte body is 400 in base64
        return event(300, correlation_id).size() - 400

    # The encoded body grows 4 bytes per 3: a longer correlation id reaches the sizes in between.
    correlation_id = next(cid for cid in ("req-1", "req-1-", "req-1--", "req-1---") if (size - overhead(cid)) % 4 == 0)
    made = event((size - overhead(correlation_id)) // 4 * 3, correlation_id)
    assert made.encoded()[1] == "base64" and made.size() == size
    return made


def test_a_message_of_exactly_256_kib_is_sent():
    sqs = RecordingSqs()
    EventQueue("https://queue", sqs).send(event_of_size(SQS_LIMIT))
    assert len(sqs.sent) == 1


def test_one_byte_more_is_refused_before_sqs_sees_it():
    sqs = RecordingSqs()
    with pytest.raises(MessageTooLarge, match="262145 bytes exceeds 262144"):
        EventQueue("https://queue", sqs).send(event_of_size(SQS_LIMIT + 1))
    assert sqs.sent == []


def test_a_base64_message_of_exactly_256_kib_is_sent():
    sqs = RecordingSqs()
    EventQueue("https://queue", sqs).send(base64_event_of_size(SQS_LIMIT))
    assert len(sqs.sent) == 1


def test_a_body_well_under_256_kib_is_refused_when_its_base64_encoding_is_one_byte_too_many():
    # Given a webhook of about 192 KiB that must travel as base64, which makes its message one byte too large
    event = base64_event_of_size(SQS_LIMIT + 1)
    assert len(event.body) < SQS_LIMIT * 3 // 4
    sqs = RecordingSqs()

    # When it is sent, Then it is refused as too large (the receiver answers 413), and SQS never sees it
    with pytest.raises(MessageTooLarge, match="262145 bytes exceeds 262144"):
        EventQueue("https://queue", sqs).send(event)
    assert sqs.sent == []



def test_a_replay_of_a_message_at_the_limit_is_refused_when_its_replay_id_would_take_it_over():
    # Given an archived webhook whose message is exactly 256 KiB, replayed with a replay id added
    sqs = RecordingSqs()
    queue = EventQueue("https://queue", sqs)

    # When it is sent again with the operator's replay id, Then it is refused as too large (the
    # operator reads MessageTooLarge, not the queue being unavailable), and SQS never sees it
    with pytest.raises(MessageTooLarge, match="exceeds 262144"):
        queue.send(event_of_size(SQS_LIMIT), extra_attributes={"replay_id": "r" * 32})
    assert sqs.sent == []
    # while a replay that fits exactly (the attribute's name, type and value: 9 + 6 + 32 bytes) is sent
    queue.send(event_of_size(SQS_LIMIT - 47), extra_attributes={"replay_id": "r" * 32})
    assert sqs.sent[0]["MessageAttributes"]["replay_id"]["StringValue"] == "r" * 32

@pytest.mark.parametrize("body", [b'{"event": "a\x01b"}', b'{"a": "\xef\xbf\xbe"}', b"\xff\xfe not utf-8"],
                         ids=["ascii control character", "U+FFFE", "not UTF-8"])
def test_a_body_sqs_cannot_carry_as_text_travels_as_base64_and_comes_back_byte_for_byte(body: bytes):
    text, encoding = encode_body(body)
    assert encoding == "base64"
    assert decode_body(text, encoding) == body


def test_a_body_sqs_can_carry_travels_as_its_own_text():
    body = '{"event": "activities.added",\n\t"name": "Zoë"}'.encode()
    assert encode_body(body) == (body.decode(), "raw")


@pytest.mark.parametrize(("value", "sent"), [
    ("activities.added", "activities.added"),
    ("zoë's \x01 event", "zoë's \ufffd event"),  # kept, with only what SQS refuses replaced
    ("plain \x01 ascii", "plain \ufffd ascii"),  # ASCII, but a control character SQS refuses
    ("", "-"),  # SQS refuses an empty attribute
])
def test_an_attribute_keeps_its_text_with_only_what_sqs_refuses_replaced(value: str, sent: str):
    assert attribute_text(value) == sent
