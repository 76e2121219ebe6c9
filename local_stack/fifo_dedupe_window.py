"""SQS FIFO's 5-minute deduplication window, put in front of moto on a boto3 SQS client.

SQS accepts a message whose deduplication id it saw in the last 5 minutes, answers as for any
send, and never delivers it, even when the first message was already received and deleted. moto
only compares with the messages still in the queue, so without this a local run cannot show what
the real window drops. `FifoDedupeWindow(seconds).attach(client)` hooks the client's
`SendMessage` and `SendMessageBatch` (botocore events): an id seen within the window is answered
with the first message's id and not sent; any other send goes to moto and its id is remembered.

The window's key is what SQS compares: the queue, the id (the body's SHA-256 when the queue has
content-based deduplication and the send gives none), and the message group when the queue's
`DeduplicationScope` is `messageGroup`. It sees only the sends of the clients it is attached to:
the local stack attaches it to the receiver's and the sync's clients, the tests' harness to its
own (see docs/sync.md, "What a duplicate is").
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse
from botocore.exceptions import BotoCoreError, ClientError

SQS_WINDOW_SECONDS = 300.0
_CONTEXT_KEY = "fifo_dedupe_window"


@dataclass(frozen=True)
class _Sent:
    at: float
    message_id: str
    sequence_number: str | None


@dataclass(frozen=True)
class _QueueRules:
    fifo: bool
    per_group: bool
    content_based: bool


class FifoDedupeWindow:
    def __init__(self, seconds: float = SQS_WINDOW_SECONDS, *, clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[str, str], None] | None = None) -> None:
        """`on_drop(group, deduplication_id)` is told of each send the window drops."""
        if seconds <= 0:
            raise ValueError(f"the deduplication window must be positive, not {seconds}")
        self.seconds = seconds
        self._clock = clock
        self._on_drop = on_drop
        self._seen: OrderedDict[tuple[str, str, str], _Sent] = OrderedDict()  # oldest first
        self._rules: dict[str, _QueueRules] = {}
        self._lock = threading.Lock()
        self.dropped = 0  # sends answered from the window, never delivered

    def attach(self, client: Any) -> Any:
        """Put the window in front of `client`'s sends; returns the client."""
        events = client.meta.events
        for operation in ("SendMessage", "SendMessageBatch"):
            events.register(f"before-parameter-build.sqs.{operation}", self._make_check(client, operation))
            events.register(f"before-call.sqs.{operation}", self._answer_from_window)
            events.register(f"after-call.sqs.{operation}", self._remember)
        return client

    # --- the window ------------------------------------------------------------------------------

    def _key(self, client: Any, queue_url: str, entry: dict[str, Any]) -> tuple[str, str, str] | None:
        rules = self._queue_rules(client, queue_url)
        dedupe_id = entry.get("MessageDeduplicationId")
        if not dedupe_id and rules.content_based:
            dedupe_id = hashlib.sha256(str(entry.get("MessageBody", "")).encode("utf-8")).hexdigest()
        if not rules.fifo or not dedupe_id:
            return None  # SQS itself answers these (not FIFO, or an error for the missing id)
        group = str(entry.get("MessageGroupId", "")) if rules.per_group else ""
        # The URL's path names the queue whatever host or port spelling the client used.
        return urlsplit(queue_url).path, group, str(dedupe_id)

    def _queue_rules(self, client: Any, queue_url: str) -> _QueueRules:
        rules = self._rules.get(queue_url)
        if rules is None:
            attributes = client.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["FifoQueue", "DeduplicationScope", "ContentBasedDeduplication"],
            )["Attributes"]
            rules = self._rules[queue_url] = _QueueRules(
                fifo=attributes.get("FifoQueue") == "true",
                per_group=attributes.get("DeduplicationScope") == "messageGroup",
                content_based=attributes.get("ContentBasedDeduplication") == "true")
        return rules

    def _earlier(self, key: tuple[str, str, str]) -> _Sent | None:
        """The send of `key` within the window, if any; forgets what the window has passed."""
        now = self._clock()
        while self._seen:
            oldest_key, oldest = next(iter(self._seen.items()))
            if now - oldest.at < self.seconds:
                break
            del self._seen[oldest_key]
        found = self._seen.get(key)
        return found if found is not None and now - found.at < self.seconds else None

    # --- botocore event handlers -----------------------------------------------------------------

    def _make_check(self, client: Any, operation: str) -> Callable[..., None]:
        def check(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            queue_url = str(params.get("QueueUrl", ""))
            entries = [params] if operation == "SendMessage" else list(params.get("Entries") or [])
            try:
                keyed = [(entry, self._key(client, queue_url, entry)) for entry in entries]
            except (ClientError, BotoCoreError):
                return  # no such queue, or bad parameters: the send itself fails and says why
            with self._lock:
                answered = {}
                for entry, key in keyed:
                    earlier = self._earlier(key) if key is not None else None
                    if earlier is not None:
                        answered[str(entry.get("Id", ""))] = (earlier, entry)
            remembered = {str(entry.get("Id", "")): key for entry, key in keyed if key is not None}
            context[_CONTEXT_KEY] = {"answered": answered, "keys": remembered, "operation": operation,
                                     "entries": len(entries)}
            if operation == "SendMessageBatch" and answered and len(answered) < len(entries):
                # Only the new entries go to SQS; the rest are answered from the window.
                params["Entries"] = [e for e in entries if str(e.get("Id", "")) not in answered]

        return check

    def _answer_from_window(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        state = context.get(_CONTEXT_KEY)
        if not state or not state["answered"]:
            return None
        if state["operation"] == "SendMessage":
            ((earlier, entry),) = state["answered"].values()
            self._count_dropped(state)
            return _ok(), {**_accepted(earlier, entry), "ResponseMetadata": {"HTTPStatusCode": 200}}
        if len(state["answered"]) < state["entries"]:
            return None  # a batch with new entries: SQS answers those, `_remember` adds the rest
        self._count_dropped(state)
        return _ok(), {"Successful": _batch_answers(state["answered"]), "Failed": [],
                       "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _remember(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        state = context.get(_CONTEXT_KEY)
        if not state or http_response.status_code >= 300:
            return
        if state["operation"] == "SendMessage":
            if state["answered"]:
                return
            sent = [("", parsed)]
        else:
            sent = [(str(item.get("Id", "")), item) for item in parsed.get("Successful", [])
                    if str(item.get("Id", "")) not in state["answered"]]
            if state["answered"] and len(state["answered"]) < state["entries"]:
                parsed.setdefault("Successful", []).extend(_batch_answers(state["answered"]))
                self._count_dropped(state)
        with self._lock:
            now = self._clock()  # under the lock: the window's order is the order of its times
            for entry_id, answer in sent:
                key = state["keys"].get(entry_id)
                if key is not None and key not in self._seen:  # SQS's window runs from the first send
                    self._seen[key] = _Sent(now, str(answer.get("MessageId", "")), answer.get("SequenceNumber"))

    def _count_dropped(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.dropped += len(state["answered"])
        if self._on_drop is not None:
            for _, entry in state["answered"].values():
                self._on_drop(str(entry.get("MessageGroupId", "")), str(entry.get("MessageDeduplicationId", "")))


def _ok() -> AWSResponse:
    return AWSResponse("", 200, {}, None)


def _accepted(earlier: _Sent, entry: dict[str, Any]) -> dict[str, Any]:
    """What SQS answers for a send it drops: the first message's id, this body's digest."""
    answer: dict[str, Any] = {
        "MessageId": earlier.message_id,
        "MD5OfMessageBody": hashlib.md5(str(entry.get("MessageBody", "")).encode("utf-8")).hexdigest(),  # noqa: S324
    }
    if earlier.sequence_number is not None:
        answer["SequenceNumber"] = earlier.sequence_number
    return answer


def _batch_answers(answered: dict[str, tuple[_Sent, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"Id": entry_id, **_accepted(earlier, entry)} for entry_id, (earlier, entry) in answered.items()]
