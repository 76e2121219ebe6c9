"""Lambda-shaped SQS events and a context object, as the Lambda service hands them to the sync
handler (and as the local stack's poller builds them)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from argyle_pipeline.aws.event_queue import QueuedEvent
from local_stack.lambda_runtime import LambdaContext

DEFAULT_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:test-EventsQueue.fifo"


class FakeLambdaContext(LambdaContext):
    """Lambda's context (the local stack's), whose time left a test can fix: `remaining_ms` is a
    number, or a callable for a clock the test drives; by default the time left of a 900 s
    function started now."""

    def __init__(self, remaining_ms: int | Callable[[], int] | None = None, *,
                 function_name: str = "SyncFunction", timeout_seconds: int = 900,
                 memory_mb: int = 1024) -> None:
        super().__init__(function_name, timeout_seconds=timeout_seconds, memory_mb=memory_mb)
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        if callable(self._remaining):
            return int(self._remaining())
        if self._remaining is not None:
            return int(self._remaining)
        return super().get_remaining_time_in_millis()


def _lambda_attributes(attributes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """SQS API message attributes ({StringValue, DataType}) in Lambda's spelling."""
    return {name: {"stringValue": a.get("StringValue", a.get("stringValue")), "stringListValues": [],
                   "binaryListValues": [], "dataType": a.get("DataType", a.get("dataType", "String"))}
            for name, a in attributes.items()}


def sqs_record(body: str, *, group_id: str, message_attributes: Mapping[str, Mapping[str, str]] | None = None,
               message_id: str | None = None, receive_count: int = 1,
               queue_arn: str = DEFAULT_QUEUE_ARN) -> dict[str, Any]:
    message_id = message_id or str(uuid.uuid4())
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": now_ms,
            "SequenceNumber": str(int(now_ms) * 1000),
            "MessageGroupId": group_id,
            "MessageDeduplicationId": message_id,
        },
        "messageAttributes": _lambda_attributes(message_attributes or {}),
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def record_for(event: QueuedEvent, *, message_id: str | None = None, receive_count: int = 1,
               queue_arn: str = DEFAULT_QUEUE_ARN) -> dict[str, Any]:
    """The record Lambda would deliver for a QueuedEvent the receiver (or a continuation) sent."""
    body, _ = event.encoded()
    return sqs_record(body, group_id=event.group_id, message_attributes=event.attributes(),
                      message_id=message_id, receive_count=receive_count, queue_arn=queue_arn)


def record_from_sqs_message(message: Mapping[str, Any], queue_arn: str = DEFAULT_QUEUE_ARN) -> dict[str, Any]:
    """A message from `receive_message(AttributeNames=["All"], MessageAttributeNames=["All"])`
    in the shape Lambda's event source mapping delivers."""
    attributes = dict(message.get("Attributes") or {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": _lambda_attributes(message.get("MessageAttributes") or {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    """{"Records": [...]}; each record may be partial ({"body", "attributes": {"MessageGroupId"}}):
    what is missing is filled in as Lambda would."""
    full = []
    for record in records:
        group = (record.get("attributes") or {}).get("MessageGroupId", "test-group")
        base = sqs_record(record.get("body", ""), group_id=group)
        merged = {**base, **record}
        merged["attributes"] = {**base["attributes"], **(record.get("attributes") or {})}
        full.append(merged)
    return {"Records": full}
