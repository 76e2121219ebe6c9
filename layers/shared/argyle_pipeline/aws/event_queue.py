"""The one place that talks to SQS: putting webhook events (and sync continuations) on the FIFO queue."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# SQS's classic limit. Since 2025 SQS accepts 1 MiB, but this is the size every region and moto
# accept; raise it with MAX_MESSAGE_BYTES once your queue is configured for more.
DEFAULT_MAX_MESSAGE_BYTES = 262_144


# botocore's error types, bound when the first EventQueue is made (importing botocore costs a cold start).
_BOTO_ERRORS: tuple[type[BaseException], ...] = ()


class QueueUnavailable(Exception):
    """SQS refused or failed the send: the event was NOT stored, the caller must answer 5xx."""


class MessageTooLarge(Exception):
    """The message (body plus attributes) is larger than the queue accepts."""


# Characters SQS accepts in a message body; valid JSON may still hold others (U+FFFE, U+FFFF).
_SQS_UNSAFE = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def encode_body(body: bytes, text: str | None = None) -> tuple[str, str]:
    """The SQS message body and its `body_encoding`: the raw text when SQS can carry it, else base64.
    `text`, when the caller already decoded the body as UTF-8, saves decoding it again."""
    if text is None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    # Printable ASCII is always safe (a C-speed check); anything else goes through the regex.
    if text is not None and ((text.isascii() and text.isprintable()) or not _SQS_UNSAFE.search(text)):
        return text, "raw"
    return base64.b64encode(body).decode("ascii"), "base64"


def attribute_text(value: str) -> str:
    """`value` as a String message attribute SQS accepts: characters it cannot carry (and lone
    surrogates, which UTF-8 cannot) become U+FFFD; empty becomes "-" (SQS refuses empty values)."""
    if value.isascii() and value.isprintable():
        return value or "-"
    return _SQS_UNSAFE.sub("\ufffd", value) or "-"


def decode_body(message_body: str, body_encoding: str | None) -> bytes:
    """The exact bytes Argyle sent, from an SQS record's body and `body_encoding` attribute."""
    if body_encoding == "base64":
        return base64.b64decode(message_body)
    return message_body.encode("utf-8")


def dedupe_key(body: bytes) -> str:
    """Argyle sends no event id, so an event's identity is the hash of its exact bytes."""
    return hashlib.sha256(body).hexdigest()


def delivery_keys(body: bytes, delivery_id: str) -> tuple[str, str]:
    """(`dedupe_key(body)`, the SQS deduplication id of this one delivery of it).

    The deduplication id is the SHA-256 of the body, a newline and the delivery's own id (API
    Gateway's request id), so SQS drops only a re-send of this very delivery (botocore retrying a
    send whose answer was lost), never a later delivery of the same bytes, which may announce a new
    change at Argyle. The sync decides what a repeated body needs (docs/sync.md, "What a duplicate
    is"). Without a delivery id (a direct invocation), a random one, drawn once per delivery.
    """
    digest = hashlib.sha256(body)
    key = digest.hexdigest()  # hexdigest does not finalise: the same hash continues below
    digest.update(b"\n" + (delivery_id or os.urandom(16).hex()).encode("utf-8", "surrogatepass"))
    return key, digest.hexdigest()


@dataclass  # not frozen: a frozen dataclass's __init__ is measurably slower on the receiver's hot path
class QueuedEvent:
    body: bytes
    event_name: str
    group_id: str
    dedupe_key: str
    correlation_id: str
    received_at_ms: int
    text: str | None = field(default=None, repr=False, compare=False)  # the body decoded, if known
    # SQS's MessageDeduplicationId when it is not `dedupe_key` (the receiver's: one per delivery).
    deduplication_id: str = ""

    @cached_property
    def _encoded(self) -> tuple[str, str]:
        return encode_body(self.body, self.text)

    def encoded(self) -> tuple[str, str]:
        return self._encoded

    @cached_property
    def _attributes(self) -> dict[str, dict[str, str]]:
        return {
            "body_encoding": {"DataType": "String", "StringValue": self.encoded()[1]},
            "event": {"DataType": "String", "StringValue": attribute_text(self.event_name)},
            "dedupe_key": {"DataType": "String", "StringValue": self.dedupe_key},
            "correlation_id": {"DataType": "String", "StringValue": attribute_text(self.correlation_id)},
            "received_at_ms": {"DataType": "Number", "StringValue": str(self.received_at_ms)},
        }

    def attributes(self) -> dict[str, dict[str, str]]:
        return self._attributes

    def size(self) -> int:
        return self._size

    @cached_property
    def _size(self) -> int:
        """Bytes SQS counts against its limit: the body plus each attribute's name, type and value."""
        return self.body_size() + attributes_size(self.attributes())

    def body_size(self) -> int:
        text, encoding = self.encoded()
        # "raw" text is the body's own UTF-8, so its size is the body's; base64 is ASCII.
        return len(self.body) if encoding == "raw" else len(text)


def attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    """What message attributes count against SQS's limit: each one's name, type and value."""
    return sum(len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
               for name, attr in attributes.items())


class EventQueue:
    def __init__(self, queue_url: str, client: Any = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        global _BOTO_ERRORS
        from botocore.exceptions import BotoCoreError, ClientError

        _BOTO_ERRORS = (ClientError, BotoCoreError)
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client
        self._queue_url = queue_url
        self.max_message_bytes = max_message_bytes

    @property
    def client(self) -> Any:
        """The SQS client (the local stack puts its deduplication window on it)."""
        return self._client

    def check_size(self, event: QueuedEvent) -> None:
        # Fast path: base64 grows a body by 4/3, and the attributes stay far below 4 KiB (the
        # event name is cut at 256 characters), so a body this small always fits.
        if len(event.body) * 4 // 3 + 4096 <= self.max_message_bytes:
            return
        if event.size() > self.max_message_bytes:
            raise MessageTooLarge(f"message of {event.size()} bytes exceeds {self.max_message_bytes}")

    def send(self, event: QueuedEvent, extra_attributes: dict[str, str] | None = None) -> str:
        """Enqueue the raw body unchanged; returns the SQS message id. `extra_attributes` are for
        operator tools (a replay's id), never for what the receiver takes from a request."""
        attributes = event.attributes()
        if extra_attributes:
            attributes = {**attributes, **{name: {"DataType": "String", "StringValue": attribute_text(value)}
                                           for name, value in extra_attributes.items()}}
            # The added attributes count against SQS's limit too: a replay of a body near it is a
            # MessageTooLarge here, not a refusal by SQS reported as the queue being unavailable.
            size = event.body_size() + attributes_size(attributes)
            if size > self.max_message_bytes:
                raise MessageTooLarge(f"message of {size} bytes exceeds {self.max_message_bytes}")
        else:
            self.check_size(event)
        try:
            response = self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=event.encoded()[0],
                MessageGroupId=event.group_id,
                MessageDeduplicationId=event.deduplication_id or event.dedupe_key,
                MessageAttributes=attributes,
            )
        except _BOTO_ERRORS as exc:
            raise QueueUnavailable(type(exc).__name__) from exc
        return str(response["MessageId"])

    def retry_later(self, delays: list[tuple[str, int]]) -> dict[str, str]:
        """Make each received message (by receipt handle) visible again after its delay in seconds.
        Returns the receipt handles SQS did not take, each with the error's name: those messages
        keep the queue's visibility timeout, so they still come back, only later."""
        refused: dict[str, str] = {}
        for handle, seconds in delays:  # at most a batch (10): one call each, sqs:ChangeMessageVisibility
            try:
                self._client.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=handle,
                                                       VisibilityTimeout=seconds)
            except _BOTO_ERRORS as exc:
                refused[handle] = type(exc).__name__
        return refused
    def send_many(self, events: list[QueuedEvent], *, max_rounds: int = 5,
                  sleep: Callable[[float], None] = time.sleep) -> int:
        """Enqueue up to thousands of events, 10 per SendMessageBatch. SQS may fail some entries of
        a batch while accepting the rest: those are sent again (same dedupe ids, so a resend of
        one that did land is dropped), a few rounds with backoff; then QueueUnavailable, so the
        caller's run fails and is retried. Returns how many were sent."""
        for start in range(0, len(events), 10):
            pending = {str(i): event for i, event in enumerate(events[start:start + 10])}
            for round_no in range(max_rounds):
                if round_no:
                    sleep(min(2.0, 0.1 * 2 ** round_no))
                for event in pending.values():
                    self.check_size(event)
                try:
                    response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=[
                        {"Id": entry_id, "MessageBody": event.encoded()[0], "MessageGroupId": event.group_id,
                         "MessageDeduplicationId": event.deduplication_id or event.dedupe_key,
                         "MessageAttributes": event.attributes()}
                        for entry_id, event in pending.items()])
                except _BOTO_ERRORS as exc:
                    raise QueueUnavailable(type(exc).__name__) from exc
                pending = {f["Id"]: pending[f["Id"]] for f in response.get("Failed") or []}
                if not pending:
                    break
            else:
                raise QueueUnavailable(f"SendMessageBatch left {len(pending)} entries unsent after {max_rounds} rounds")
        return len(events)
