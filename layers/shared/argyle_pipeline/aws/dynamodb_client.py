"""The sync's DynamoDB client: botocore's standard retries (they back off on throttling:
ProvisionedThroughputExceededException, ThrottlingException, RequestLimitExceeded) plus the one
transient error botocore does not retry, a write cancelled by a concurrent transaction on its item.

What still fails after the attempts is raised; the record fails and SQS hands it out again."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

MAX_ATTEMPTS = 5
# A conflict clears as soon as the other transaction commits: short, jittered waits.
_CONFLICT_BASE_SECONDS = 0.05
_CONFLICT_CAP_SECONDS = 1.0


def is_transaction_conflict(parsed: dict[str, Any]) -> bool:
    """TransactionConflictException (a plain write met a transaction on its item), or a transaction
    cancelled only because of conflicts (every other item's reason is "None")."""
    code = (parsed.get("Error") or {}).get("Code")
    if code == "TransactionConflictException":
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = [reason.get("Code") for reason in parsed.get("CancellationReasons") or []]
    return "TransactionConflict" in reasons and all(r in ("TransactionConflict", "None") for r in reasons)


def retry_transaction_conflicts(client: Any, *, max_attempts: int = MAX_ATTEMPTS,
                                rand: Callable[[], float] = random.random) -> Any:
    """Have `client` retry transaction conflicts (botocore's `needs-retry` event), up to
    `max_attempts` in all, with full-jitter exponential waits. Returns the client."""

    def needs_retry(response: Any = None, attempts: int = 1, **_: Any) -> float | None:
        if response is None or attempts >= max_attempts or not is_transaction_conflict(response[1]):
            return None  # botocore's own rules decide
        return rand() * min(_CONFLICT_CAP_SECONDS, _CONFLICT_BASE_SECONDS * 2 ** attempts)

    client.meta.events.register("needs-retry.dynamodb", needs_retry, unique_id="argyle-transaction-conflicts")
    return client


# The batch calls that carry a page's items. Their parameters are already in DynamoDB's wire form
# (every value an {"S": ...}, {"N": "..."}, {"M": ...} map), so their JSON body is the parameters
# themselves: botocore's walk along the operation's shape (a Python call per attribute value, about
# a third of the sync's CPU for a large listing) gives the same JSON.
WIRE_FORM_OPERATIONS = frozenset({"BatchWriteItem", "BatchGetItem"})


class WireFormSerializer:
    """botocore's request serializer, except that a batch call's body is `json.dumps` of its
    parameters. Anything `json.dumps` cannot write as DynamoDB would read it (a binary value: botocore
    base64-encodes bytes; a Decimal) goes through botocore's serializer, as does every other call.
    The method, URL and headers are always botocore's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def serialize_to_request(self, parameters: dict[str, Any], operation_model: Any) -> dict[str, Any]:
        if operation_model.name not in WIRE_FORM_OPERATIONS:
            return self._inner.serialize_to_request(parameters, operation_model)
        try:
            body = json.dumps(parameters).encode("utf-8")
        except (TypeError, ValueError):
            return self._inner.serialize_to_request(parameters, operation_model)
        request: dict[str, Any] = self._inner.serialize_to_request({}, operation_model)
        request["body"] = body
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def serialize_batches_as_wire_form(client: Any) -> Any:
    """Give `client` the WireFormSerializer (a no-op if this botocore keeps its serializer elsewhere).
    Returns the client."""
    inner = getattr(client, "_serializer", None)
    if inner is not None and hasattr(inner, "serialize_to_request") and not isinstance(inner, WireFormSerializer):
        client._serializer = WireFormSerializer(inner)
    return client


def sync_dynamodb_client(*, max_attempts: int = MAX_ATTEMPTS, **client_kwargs: Any) -> Any:
    import boto3
    from botocore.config import Config

    # No client-side parameter validation: DynamoDB validates every request itself (a bad one is a
    # ValidationException, raised like any other error), and botocore's second walk over every
    # attribute of every item costs about as much CPU as serialising them.
    # Connections: a large listing's windows (4) each write a page's batches 4 at a time.
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, parameter_validation=False,
                    max_pool_connections=32)
    client = serialize_batches_as_wire_form(boto3.client("dynamodb", config=config, **client_kwargs))
    return retry_transaction_conflicts(client, max_attempts=max_attempts)
