"""Which DynamoDB errors the sync's client retries beyond botocore's own rules: transaction
conflicts only, never a transaction cancelled by a failed condition (that answer is final)."""

from __future__ import annotations

from argyle_pipeline.aws.dynamodb_client import is_transaction_conflict


def cancelled(*codes: str) -> dict[str, object]:
    return {"Error": {"Code": "TransactionCanceledException"},
            "CancellationReasons": [{"Code": code} for code in codes]}


def test_a_conflict_is_retried() -> None:
    assert is_transaction_conflict({"Error": {"Code": "TransactionConflictException"}})
    assert is_transaction_conflict(cancelled("TransactionConflict", "None"))
    assert is_transaction_conflict(cancelled("None", "TransactionConflict", "TransactionConflict"))


def test_a_failed_condition_or_another_error_is_not() -> None:
    assert not is_transaction_conflict(cancelled("ConditionalCheckFailed", "TransactionConflict"))
    assert not is_transaction_conflict(cancelled("ConditionalCheckFailed", "None"))
    assert not is_transaction_conflict(cancelled("None", "None"))
    assert not is_transaction_conflict(cancelled())
    assert not is_transaction_conflict({"Error": {"Code": "ValidationException"}})
    assert not is_transaction_conflict({})
