"""DynamoDB's load errors, injected where AWS produces them: a botocore `before-send` hook on a
real client answers chosen requests with DynamoDB's own error response (HTTP 400, its JSON error
body) instead of sending them. botocore then parses and retries them by its own rules, exactly as
it does an answer from AWS, and the client's other hooks (its retry settings) see them too.

Use it against moto's server: botocore calls every `before-send` hook, and moto's in-process
mock (one of them) would apply the request even when this hook answers it with an error.

It also records every call: the operation and the key of each item it writes, so that a test can
say which items a record touched."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse

_PREFIX = "com.amazonaws.dynamodb.v20120810#"


def error_body(code: str, operation: str) -> dict[str, Any]:
    """DynamoDB's JSON error for `code`; TransactionConflict is a cancelled transaction whose
    first item met another transaction."""
    if code == "TransactionConflict":
        return {"__type": _PREFIX + "TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                           "[TransactionConflict, None]",
                "CancellationReasons": [{"Code": "TransactionConflict",
                                         "Message": "Transaction is ongoing for the item"}, {"Code": "None"}]}
    return {"__type": _PREFIX + code, "message": f"injected {code} on {operation}"}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass
class Call:
    operation: str
    label: str
    keys: list[tuple[str, str]]  # (table, key) of each item written
    injected: str | None = None


@dataclass
class DynamoDBFaultHook:
    """`plan(operation, n)` names the error to answer the n-th request (1-based, retries included)
    of `operation` with, or None to send it. `label` tags the calls recorded from now on."""

    plan: Callable[[str, int], str | None] = lambda operation, n: None
    label: str = ""
    calls: list[Call] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any) -> Any:
        # First: botocore sends nothing when the first non-None answer comes from a hook.
        client.meta.events.register_first("before-send.dynamodb", self._before_send)
        return client

    @property
    def injected(self) -> list[str]:
        return [f"{c.operation}:{c.injected}" for c in self.calls if c.injected]

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        operation = request.headers["X-Amz-Target"].decode().split(".", 1)[1]
        params = json.loads(request.body or b"{}")
        with self._lock:
            n = self._seen[operation] = self._seen.get(operation, 0) + 1
            code = self.plan(operation, n)
            self.calls.append(Call(operation, self.label, written_keys(operation, params), code))
        if code is None:
            return None
        body = json.dumps(error_body(code, operation)).encode()
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "injected"}, _Raw(body))


def _key(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)


def written_keys(operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(table, key) of every item a write request touches (items as JSON: the whole item of a put,
    whose key is part of it)."""
    if operation == "PutItem":
        return [(params["TableName"], _key(_item_key(params["Item"])))]
    if operation in ("UpdateItem", "DeleteItem"):
        return [(params["TableName"], _key(params["Key"]))]
    if operation == "BatchWriteItem":
        return [(table, _key(_item_key(r["PutRequest"]["Item"]) if "PutRequest" in r else r["DeleteRequest"]["Key"]))
                for table, requests in params["RequestItems"].items() for r in requests]
    if operation == "TransactWriteItems":
        found = []
        for entry in params["TransactItems"]:
            (kind, body), = entry.items()
            found.append((body["TableName"], _key(_item_key(body["Item"]) if kind == "Put" else body["Key"])))
        return found
    return []


def _item_key(item: dict[str, Any]) -> dict[str, Any]:
    """The key of an item of this stack's tables: sync state (pk, sk), activities (account_id,
    activity_id) or idempotency (id)."""
    names = ("pk", "sk") if "pk" in item else ("account_id", "activity_id") if "activity_id" in item else ("id",)
    return {name: item[name] for name in names}
