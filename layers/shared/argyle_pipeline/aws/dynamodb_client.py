"""The sync's DynamoDB client: botocore's standard retries (they back off on throttling:
ProvisionedThroughputExceededException, ThrottlingException, RequestLimitExceeded) plus the one
transient error botocore does not retry, a write cancelled by a concurrent transaction on its item.

What still fails after the attempts is raised; the record fails and SQS hands it out again."""

from __future__ import annotations

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


def sync_dynamodb_client(*, max_attempts: int = MAX_ATTEMPTS, **client_kwargs: Any) -> Any:
    import boto3
    from botocore.config import Config

    # No client-side parameter validation: DynamoDB validates every request itself (a bad one is a
    # ValidationException, raised like any other error), and botocore's second walk over every
    # attribute of every item costs about as much CPU as serialising them.
    # Connections: a large listing's windows (4) each write a page's batches 4 at a time.
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, parameter_validation=False,
                    max_pool_connections=32)
    return retry_transaction_conflicts(boto3.client("dynamodb", config=config, **client_kwargs),
                                       max_attempts=max_attempts)
