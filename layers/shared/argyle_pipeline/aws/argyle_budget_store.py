"""The shared Argyle request budget's shards, in the sync-state table (DynamoDB): the store behind
argyle/request_budget.py.

Items (pk, sk):
    ARGYLE_BUDGET#<nn>  BUCKET   tokens, refilled_at (epoch s), paused_until (epoch s), version

Each shard has its own partition key, so the shards spread over partitions. A take is a read and
a write conditional on the version read (optimistic: a lost race is answered False and the budget
tries another shard); a pause only ever raises paused_until.
"""

from __future__ import annotations

from typing import Any

from argyle_pipeline.argyle.request_budget import ShardState

BUDGET_PK = "ARGYLE_BUDGET"


def shard_key(shard: int) -> dict[str, Any]:
    return {"pk": {"S": f"{BUDGET_PK}#{shard:02d}"}, "sk": {"S": "BUCKET"}}


def _conditional_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", {}) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class ArgyleBudgetStore:
    def __init__(self, table_name: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table_name = table_name
        self._client = client

    def read_shard(self, shard: int) -> ShardState | None:
        item = self._client.get_item(TableName=self.table_name, Key=shard_key(shard),
                                     ConsistentRead=True).get("Item")
        if not item:
            return None
        paused = float(item["paused_until"]["N"]) if "paused_until" in item else 0.0
        if "version" not in item:  # only a pause was ever written: a full bucket
            return ShardState(tokens=float("inf"), refilled_at=0.0, paused_until=paused, version=0)
        return ShardState(tokens=float(item["tokens"]["N"]), refilled_at=float(item["refilled_at"]["N"]),
                          paused_until=paused, version=int(item["version"]["N"]))

    def write_shard(self, shard: int, tokens: float, refilled_at: float, expected_version: int) -> bool:
        condition = "attribute_not_exists(#version)" if expected_version == 0 else "#version = :expected"
        values: dict[str, Any] = {":tokens": {"N": repr(round(tokens, 6))},
                                  ":at": {"N": repr(round(refilled_at, 6))},
                                  ":next": {"N": str(expected_version + 1)}}
        if expected_version:
            values[":expected"] = {"N": str(expected_version)}
        try:
            self._client.update_item(
                TableName=self.table_name, Key=shard_key(shard),
                UpdateExpression="SET #tokens = :tokens, refilled_at = :at, #version = :next",
                ConditionExpression=condition, ExpressionAttributeValues=values,
                ExpressionAttributeNames={"#tokens": "tokens", "#version": "version"})
        except Exception as exc:
            if _conditional_failed(exc):
                return False
            raise  # throttling that outlasted botocore's retries: the Argyle call fails, SQS retries
        return True

    def pause_shard(self, shard: int, until: float) -> None:
        try:
            self._client.update_item(
                TableName=self.table_name, Key=shard_key(shard), UpdateExpression="SET paused_until = :until",
                ConditionExpression="attribute_not_exists(paused_until) OR paused_until < :until",
                ExpressionAttributeValues={":until": {"N": repr(round(until, 6))}})
        except Exception as exc:
            if not _conditional_failed(exc):
                raise
