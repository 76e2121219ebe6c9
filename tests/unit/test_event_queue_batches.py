"""`EventQueue.send_many`: SQS may fail some entries of a SendMessageBatch while accepting the rest.
Those are sent again, waiting longer each round (0.2 s, 0.4 s... never more than 2 s, so a throttled
queue is not hammered and a short blip costs little), and when they still fail the caller's run
fails so that SQS hands its message out again."""

from __future__ import annotations

from typing import Any

import pytest

from argyle_pipeline.aws.event_queue import EventQueue, MessageTooLarge, QueuedEvent, QueueUnavailable


class FlakySqs:
    """Fails every entry of the first `failing_rounds` batches; then accepts them all."""

    def __init__(self, failing_rounds: int) -> None:
        self.failing_rounds = failing_rounds
        self.batches: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append([entry["MessageDeduplicationId"] for entry in Entries])
        if len(self.batches) <= self.failing_rounds:
            return {"Successful": [], "Failed": [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
                                                 for e in Entries]}
        return {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in Entries], "Failed": []}


def events(n: int) -> list[QueuedEvent]:
    return [QueuedEvent(body=f'{{"n": {i}}}'.encode(), event_name="sync.changes", group_id="account:a",
                        dedupe_key=f"{i:064d}", correlation_id="c", received_at_ms=1) for i in range(n)]


def test_entries_sqs_failed_are_sent_again_after_waits_that_double_up_to_two_seconds() -> None:
    # Given SQS failing a batch's entries for 6 rounds, then accepting them
    sqs = FlakySqs(failing_rounds=6)
    waits: list[float] = []

    # When 3 events are sent with up to 8 rounds
    sent = EventQueue("https://sqs.example/q.fifo", sqs).send_many(events(3), max_rounds=8, sleep=waits.append)

    # Then every round resends the same entries (same dedupe ids), after a wait that doubles from
    # 0.2 s and stops growing at 2 s
    assert sent == 3
    assert len(sqs.batches) == 7 and all(batch == sqs.batches[0] for batch in sqs.batches)
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_entries_still_failing_after_the_last_round_fail_the_run() -> None:
    sqs = FlakySqs(failing_rounds=99)
    waits: list[float] = []

    with pytest.raises(QueueUnavailable, match="3 entries unsent after 5 rounds"):
        EventQueue("https://sqs.example/q.fifo", sqs).send_many(events(3), sleep=waits.append)

    assert len(sqs.batches) == 5
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6])


def test_an_event_too_large_for_sqs_fails_the_run_naming_its_size_before_its_batch_is_sent() -> None:
    # Given three small events and, in the same batch of ten, one whose body alone exceeds SQS's 256 KiB
    sqs = FlakySqs(failing_rounds=0)
    too_large = QueuedEvent(
        body=b'{"n": "' + b"x" * 262_144 + b'"}',
        event_name="sync.changes",
        group_id="account:a",
        dedupe_key="9" * 64,
        correlation_id="c",
        received_at_ms=1,
    )

    # When they are sent, Then the run fails saying the message is too large, and none of the batch reached SQS
    with pytest.raises(MessageTooLarge, match="exceeds 262144"):
        EventQueue("https://sqs.example/q.fifo", sqs).send_many([*events(3), too_large], sleep=lambda _: None)
    assert sqs.batches == []
