"""Reading a table straight out of moto's in-process backend, for assertions on large tables.

moto 5.2's response serializer takes milliseconds per nested attribute value, so reading a few
thousand activities back through the API would dominate a test's time. The sync's own read paths
(ActivityStore.activities, the CLI) are tested through the API on small tables.
"""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends


def table_items(table_name: str, region: str = "us-east-1") -> list[dict[str, Any]]:
    """Every item of the table as plain Python (numbers as Decimal)."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(table_name)
    items: list[dict[str, Any]] = []
    for value in table.items.values():
        entries = value.values() if isinstance(value, dict) else [value]
        items.extend(entry.to_regular_json() for entry in entries)
    return items


def live_activities(table_name: str, account_id: str) -> dict[str, dict[str, Any]]:
    """{activity_id: the stored Argyle object} of the account's live (not removed) activities."""
    return {item["activity_id"]: item["activity"] for item in table_items(table_name)
            if item["account_id"] == account_id and "removed_at" not in item}
