"""The one place that talks to the activities table (DynamoDB).

Item (key account_id + activity_id; GSI ByStartDate = account_id + start_date):
    account_id, activity_id   the activity's `account` and `id`
    start_date                the start string Argyle sent (v1 `start_date`, v2 `start_datetime`); absent
                              when null (the item then stays out of the GSI)
    start_key                 start_date as a UTC instant in one fixed form ('2024-05-01T12:00:00.000000Z'),
                              '~' when null: the sort key of the keys-only GSI ByStartKey that the
                              reconciler reads (one small item per activity, whatever the activity's size)
    updated_at                the string Argyle sent, for people reading the table
    version                   updated_at as integer microseconds since the epoch (0 when null): the
                              number the monotonic checks compare, whatever the string's format
    activity                  the whole Argyle object as a DynamoDB map (numbers exact, unknown fields kept):
                              a v1 activity or a v2 gig, with its own version's field names
    api_version               "v1" or "v2": which API's object `activity` is. Items written before
                              v2 support have none: they are v1 (see docs/sync.md, "API versions")
    synced_at                 when this copy was written
A removal replaces the item by a tombstone (account_id, activity_id, removed_at, expires_at): no
start_date, so it leaves the GSI, and TTL deletes it after `tombstone_seconds`.

Writes are monotonic: an older version never replaces a newer one, and nothing replaces a
tombstone. Batches (listings) read the stored versions first and write only what is not older;
this relies on one writer per account, which the FIFO queue's message groups give. Single items
(activities.updated) use a conditional PutItem, which needs no such assumption. See docs/sync.md.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from argyle_pipeline.argyle.api_versions import ApiVersion
from argyle_pipeline.sync.ports import UNDATED_KEY, ChangeSet, StoredKey, UpsertResult

BATCH_WRITE_SIZE = 25  # BatchWriteItem's limit
BATCH_GET_SIZE = 100  # BatchGetItem's limit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_serializer = TypeSerializer()
# A write lands on an empty key, or on a live copy whose version is not newer; never on a tombstone.
_NEW_OR_NOT_OLDER = "attribute_not_exists(#id) OR (attribute_not_exists(#removed) AND #v <= :v)"
_deserializer = TypeDeserializer()
T = TypeVar("T")
_DYNAMODB_INT_LIMIT = 10**38  # DynamoDB numbers carry 38 digits; boto3 refuses more


def json_attribute_value(value: Any) -> dict[str, Any]:
    """`TypeSerializer().serialize(value)` for what JSON parses to, about three times as fast: an
    activity is ~80 values and a full sync serialises every one of them. Decimals (boto3 checks
    their precision), oversized integers and anything not from JSON go to boto3 itself."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is dict:
        return {"M": {key: json_attribute_value(item) for key, item in value.items()}}
    if kind is list:
        return {"L": [json_attribute_value(item) for item in value]}
    if kind is bool:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if kind is int and -_DYNAMODB_INT_LIMIT < value < _DYNAMODB_INT_LIMIT:
        return {"N": str(value)}
    return _serializer.serialize(value)


class DynamoDBIncomplete(Exception):
    """DynamoDB left items unprocessed (throttling) after every bounded retry: a transient failure,
    the message must be retried."""


class ActivityLike(Protocol):
    """What the store needs of an activity (argyle_pipeline.argyle.activity.Activity has it)."""

    @property
    def id(self) -> str: ...

    @property
    def account(self) -> str: ...

    @property
    def updated_at(self) -> datetime | None: ...

    @property
    def start_date(self) -> datetime | None: ...

    @property
    def raw(self) -> dict[str, Any]: ...

    @property
    def api_version(self) -> ApiVersion: ...


def activity_version(updated_at: datetime | None) -> int:
    """Microseconds since the epoch; 0 for an activity without updated_at (oldest possible)."""
    if updated_at is None:
        return 0
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=UTC)
    return (updated_at - _EPOCH) // _MICROSECOND



def start_key(start_date: datetime | None) -> str:
    """The start instant in one fixed, string-sortable form; UNDATED_KEY when there is none."""
    if start_date is None:
        return UNDATED_KEY
    if start_date.tzinfo is None:
        start_date = start_date.replace(tzinfo=UTC)
    return start_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity_item(activity: ActivityLike, synced_at: str, resync_marker: str | None = None,
                  expires_at: int | None = None) -> dict[str, Any]:
    """The DynamoDB item (attribute-value form) for one activity. `expires_at`: the retention
    TTL (ActivityRetentionDays), when the stack sets one."""
    raw, api = activity.raw, activity.api_version
    item: dict[str, Any] = {
        "account_id": {"S": activity.account},
        "activity_id": {"S": activity.id},
        "start_key": {"S": start_key(activity.start_date)},
        "version": {"N": str(activity_version(activity.updated_at))},
        "api_version": {"S": api.name},
        "synced_at": {"S": synced_at},
    }
    if resync_marker:  # which re-sync from scratch last saw this activity at Argyle
        item["resync_marker"] = {"S": resync_marker}
    if expires_at is not None:
        item["expires_at"] = {"N": str(expires_at)}
    start_date, updated_at = raw.get(api.start_field), raw.get("updated_at")
    if isinstance(start_date, str) and start_date:
        item["start_date"] = {"S": start_date}
    if isinstance(updated_at, str) and updated_at:
        item["updated_at"] = {"S": updated_at}
    # The big attribute last: moto re-measures every attribute already set on each set, so a
    # nested map set first would be measured once per later attribute (DynamoDB is indifferent).
    item["activity"] = json_attribute_value(raw)
    return item


def stored_api_version(item: Mapping[str, Any]) -> str:
    """The API version of a stored item (plain Python, as `from_dynamodb` gives it): items written
    before v2 support carry none, and are v1's."""
    return str(item.get("api_version") or "v1")


def tombstone_item(account_id: str, activity_id: str, removed_at: str, expires_at: int) -> dict[str, Any]:
    return {
        "account_id": {"S": account_id},
        "activity_id": {"S": activity_id},
        "removed_at": {"S": removed_at},
        "expires_at": {"N": str(expires_at)},
    }


def from_dynamodb(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as plain Python (numbers as Decimal)."""
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _backoff(round_no: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    # Full jitter: spreads retries of many throttled writers apart.
    return rand() * min(cap, base * (2 ** round_no))


class ActivityStore:
    def __init__(
        self,
        table_name: str,
        client: Any = None,
        *,
        tombstone_seconds: int = 35 * 86_400,
        retention_seconds: int | None = None,
        max_rounds: int = 8,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        concurrency: int = 4,
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self.table_name = table_name
        self.tombstone_seconds = tombstone_seconds
        # Activities expire (DynamoDB TTL) this long after their last sync; None keeps them.
        self.retention_seconds = retention_seconds
        self.max_rounds = max_rounds
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._sleep, self._rand, self._clock = sleep, rand, clock
        # Calls made, for metrics and the benchmark (retries of unprocessed items included).
        self.write_calls = 0
        self.read_calls = 0
        self._tally_lock = threading.Lock()  # a large listing's windows write from several threads
        # A page's batches go out this many at once: each is a round trip, and the keys are distinct.
        self.concurrency = max(1, concurrency)
        self._changes: ChangeSet | None = None  # set by track_changes(): change events are on

    # --- writes ---------------------------------------------------------------------------------

    def upsert_many(self, activities: Sequence[ActivityLike], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult:
        """Write the activities that are not older than their stored copy and not removed.

        Assumes no other writer for these accounts runs at the same time (FIFO message groups).
        With `resync_marker` (a re-sync from scratch: Argyle's listing is the truth now), removed
        activities that Argyle lists are written again, and every written item carries the marker.
        """
        latest: dict[tuple[str, str], ActivityLike] = {}
        for activity in activities:  # BatchWriteItem refuses two writes of one key
            key = (activity.account, activity.id)
            seen = latest.get(key)
            if seen is None or activity_version(activity.updated_at) >= activity_version(seen.updated_at):
                latest[key] = activity
        stored = self._stored_versions(list(latest))
        result = UpsertResult()
        writes: list[dict[str, Any]] = []
        created: list[str] = []
        changed: list[str] = []
        for key, activity in latest.items():
            current = stored.get(key)
            version = activity_version(activity.updated_at)
            if current is not None and current[1] and not resync_marker:
                result.removed += 1
            elif current is not None and not current[1] and current[0] > version:
                result.stale += 1
            else:
                if current is None or current[1]:
                    result.created += 1
                    created.append(activity.id)
                elif current[0] < version:
                    result.changed += 1
                    changed.append(activity.id)
                writes.append({"PutRequest": {"Item": activity_item(activity, synced_at, resync_marker,
                                                                    self._expires_at())}})
        self._batch_write(writes)
        result.written = len(writes)
        if self._changes is not None:
            self._changes.added.extend(created)
            self._changes.updated.extend(changed)
        return result

    def upsert_one(self, activity: ActivityLike, synced_at: str) -> UpsertResult:
        """Conditional write: succeeds only over nothing, or over a live copy that is not newer."""
        from botocore.exceptions import ClientError

        self._tally("write_calls")
        version = activity_version(activity.updated_at)
        try:
            response = self._client.put_item(
                TableName=self.table_name,
                Item=activity_item(activity, synced_at, expires_at=self._expires_at()),
                ConditionExpression=_NEW_OR_NOT_OLDER,
                ExpressionAttributeNames={"#id": "activity_id", "#removed": "removed_at", "#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(version)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item") or {}
            return UpsertResult(removed=1) if "removed_at" in old else UpsertResult(stale=1)
        old_version = (response.get("Attributes") or {}).get("version")
        result = UpsertResult(written=1, created=1) if old_version is None else \
            UpsertResult(written=1, changed=int(int(old_version["N"]) < version))
        if self._changes is not None and (result.created or result.changed):
            (self._changes.added if result.created else self._changes.updated).append(activity.id)
        return result

    def remove(self, account_id: str, activity_ids: Iterable[str], removed_at: str) -> int:
        """Replace each activity by a tombstone, in batches of 25. A removal always wins: no
        condition is needed, and a later stale write cannot undo it. Returns how many."""
        expires_at = int(self._clock()) + self.tombstone_seconds
        unique = list(dict.fromkeys(i for i in activity_ids if i))
        live: list[str] = []
        if self._changes is not None and unique:
            stored = self._stored_versions([(account_id, i) for i in unique])
            live = [i for i in unique if (account_id, i) in stored and not stored[(account_id, i)][1]]
        self._batch_write([{"PutRequest": {"Item": tombstone_item(account_id, i, removed_at, expires_at)}}
                           for i in unique])
        if self._changes is not None:
            self._changes.removed.extend(live)
        return len(unique)

    def _tally(self, counter: str) -> None:
        with self._tally_lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def track_changes(self) -> ChangeSet:
        """Record every real change from now on (change events): see sync.ports.ChangeSet."""
        self._changes = ChangeSet()
        return self._changes

    def _expires_at(self) -> int | None:
        return int(self._clock()) + self.retention_seconds if self.retention_seconds else None

    def item_ids(self, account_id: str, limit: int = 1_000) -> list[str]:
        """Up to `limit` ids of the account's items, live and tombstones alike (for purging)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "KeyConditionExpression": "#a = :a", "ProjectionExpression": "#id",
            "ExpressionAttributeNames": {"#a": "account_id", "#id": "activity_id"},
            "ExpressionAttributeValues": {":a": {"S": account_id}}, "Limit": limit,
        }
        self._tally("read_calls")
        response = self._client.query(**kwargs)
        return [item["activity_id"]["S"] for item in response.get("Items", [])]

    def delete_many(self, account_id: str, activity_ids: Sequence[str]) -> int:
        """Delete the items (live copies and tombstones alike), 25 per BatchWriteItem."""
        self._batch_write([{"DeleteRequest": {"Key": {"account_id": {"S": account_id}, "activity_id": {"S": i}}}}
                           for i in dict.fromkeys(activity_ids)])
        return len(set(activity_ids))

    def _stored_versions(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, bool]]:
        """(version, removed) of each stored key, read consistently so the previous event's
        writes are seen."""
        found: dict[tuple[str, str], tuple[int, bool]] = {}
        for versions in self._each_chunk([keys[start:start + BATCH_GET_SIZE]
                                          for start in range(0, len(keys), BATCH_GET_SIZE)], self._read_versions):
            found.update(versions)
        return found

    def _read_versions(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, bool]]:
        found: dict[tuple[str, str], tuple[int, bool]] = {}
        if keys:
            pending: dict[str, Any] = {self.table_name: {
                "Keys": [{"account_id": {"S": a}, "activity_id": {"S": i}} for a, i in keys],
                "ProjectionExpression": "#a, #id, #v, #removed",
                "ExpressionAttributeNames": {"#a": "account_id", "#id": "activity_id", "#v": "version",
                                             "#removed": "removed_at"},
                "ConsistentRead": True,
            }}
            for round_no in range(self.max_rounds):
                if round_no:
                    self._sleep(_backoff(round_no, self._backoff_base, self._backoff_cap, self._rand))
                self._tally("read_calls")
                response = self._client.batch_get_item(RequestItems=pending)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    key = (item["account_id"]["S"], item["activity_id"]["S"])
                    found[key] = (int(item["version"]["N"]) if "version" in item else 0, "removed_at" in item)
                pending = response.get("UnprocessedKeys") or {}
                if not pending.get(self.table_name, {}).get("Keys"):
                    break
            else:
                raise DynamoDBIncomplete(f"BatchGetItem left keys unprocessed after {self.max_rounds} rounds")
        return found

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        self._each_chunk([requests[start:start + BATCH_WRITE_SIZE]
                          for start in range(0, len(requests), BATCH_WRITE_SIZE)], self._write_batch)

    def _each_chunk(self, chunks: list[Any], call: Callable[[Any], T]) -> list[T]:
        """`call` on every chunk, up to `concurrency` at once; the results in the chunks' order.
        Every chunk is tried even when one fails (each write is idempotent and version-checked, so
        a partly written page is written again on retry); then the first error is raised, and no
        thread outlives the call."""
        if len(chunks) <= 1 or self.concurrency == 1:
            return [call(chunk) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks)),
                                thread_name_prefix="dynamodb-batch") as pool:
            futures = [pool.submit(call, chunk) for chunk in chunks]
        return [future.result() for future in futures]

    def _write_batch(self, pending: list[dict[str, Any]]) -> None:
        if pending:
            for round_no in range(self.max_rounds):
                if round_no:
                    self._sleep(_backoff(round_no, self._backoff_base, self._backoff_cap, self._rand))
                self._tally("write_calls")
                response = self._client.batch_write_item(RequestItems={self.table_name: pending})
                pending = (response.get("UnprocessedItems") or {}).get(self.table_name, [])
                if not pending:
                    break
            else:
                raise DynamoDBIncomplete(
                    f"BatchWriteItem left {len(pending)} items unprocessed after {self.max_rounds} rounds")

    # --- reads ----------------------------------------------------------------------------------

    def get_item(self, account_id: str, activity_id: str) -> dict[str, Any] | None:
        """The stored item, tombstones included (plain Python), or None."""
        self._tally("read_calls")
        response = self._client.get_item(
            TableName=self.table_name, ConsistentRead=True,
            Key={"account_id": {"S": account_id}, "activity_id": {"S": activity_id}})
        item = response.get("Item")
        return from_dynamodb(item) if item else None

    def live_activity(self, account_id: str, activity_id: str) -> dict[str, Any] | None:
        """The Argyle object of a live activity, or None when absent or removed."""
        item = self.get_item(account_id, activity_id)
        if item is None or "removed_at" in item:
            return None
        return dict(item["activity"])

    def activities(self, account_id: str, *, include_removed: bool = False) -> Iterator[dict[str, Any]]:
        """Every stored item of the account (by activity id), live ones only unless asked."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#a = :a",
            "ExpressionAttributeNames": {"#a": "account_id"},
            "ExpressionAttributeValues": {":a": {"S": account_id}},
        }
        if not include_removed:
            kwargs["FilterExpression"] = "attribute_not_exists(#removed)"
            kwargs["ExpressionAttributeNames"]["#removed"] = "removed_at"
        yield from self._query(kwargs)

    def activities_by_start_date(self, account_id: str, start_from: str | None = None,
                                 start_to: str | None = None) -> Iterator[dict[str, Any]]:
        """Live activities whose start_date is in [start_from, start_to] (strings in Argyle's
        format, compared as strings), oldest first. Activities without start_date are not indexed."""
        names = {"#a": "account_id"}
        values: dict[str, Any] = {":a": {"S": account_id}}
        condition = "#a = :a"
        if start_from or start_to:
            names["#s"] = "start_date"
        if start_from and start_to:
            condition += " AND #s BETWEEN :f AND :t"
            values.update({":f": {"S": start_from}, ":t": {"S": start_to}})
        elif start_from:
            condition += " AND #s >= :f"
            values[":f"] = {"S": start_from}
        elif start_to:
            condition += " AND #s <= :t"
            values[":t"] = {"S": start_to}
        yield from self._query({"TableName": self.table_name, "IndexName": "ByStartDate",
                                "KeyConditionExpression": condition, "ExpressionAttributeNames": names,
                                "ExpressionAttributeValues": values})

    def live_ids_not_marked(self, account_id: str, resync_marker: str) -> list[str]:
        """Live activities a re-sync's listing did not write (ids only): gone at Argyle, or
        written by another event between the re-sync's parts. The caller asks Argyle which."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "KeyConditionExpression": "#a = :a",
            "FilterExpression": "attribute_not_exists(#removed) AND "
                                "(attribute_not_exists(#marker) OR #marker <> :m)",
            "ProjectionExpression": "#id",
            "ExpressionAttributeNames": {"#a": "account_id", "#removed": "removed_at",
                                         "#marker": "resync_marker", "#id": "activity_id"},
            "ExpressionAttributeValues": {":a": {"S": account_id}, ":m": {"S": resync_marker}},
        }
        ids: list[str] = []
        while True:
            self._tally("read_calls")
            response = self._client.query(**kwargs)
            ids.extend(item["activity_id"]["S"] for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return ids
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def stored_keys(self, account_id: str) -> list[StoredKey]:
        """Every live activity of the account as (start_key, id), sorted: from the keys-only GSI
        ByStartKey, so reading 10,000 costs about 1 MB of reads, not the activities themselves.
        Eventually consistent (GSIs are): the reconciler runs in the account's message group,
        after the writes of its earlier messages, and a key missed now is caught next time."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "IndexName": "ByStartKey",
            "KeyConditionExpression": "#a = :a",
            "ExpressionAttributeNames": {"#a": "account_id"},
            "ExpressionAttributeValues": {":a": {"S": account_id}},
        }
        keys: list[StoredKey] = []
        while True:
            self._tally("read_calls")
            response = self._client.query(**kwargs)
            keys.extend(StoredKey(item["start_key"]["S"], item["activity_id"]["S"])
                        for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        keys.sort(key=lambda k: (k.start_key, k.activity_id))
        return keys

    def count(self, account_id: str) -> dict[str, int]:
        """{"live": n, "removed": m} for the account (Query with Select=COUNT, no items read out)."""
        counts = {"live": 0, "removed": 0}
        for label, condition in (("live", "attribute_not_exists(#removed)"),
                                 ("removed", "attribute_exists(#removed)")):
            kwargs: dict[str, Any] = {
                "TableName": self.table_name, "Select": "COUNT", "KeyConditionExpression": "#a = :a",
                "FilterExpression": condition,
                "ExpressionAttributeNames": {"#a": "account_id", "#removed": "removed_at"},
                "ExpressionAttributeValues": {":a": {"S": account_id}},
            }
            while True:
                self._tally("read_calls")
                response = self._client.query(**kwargs)
                counts[label] += int(response.get("Count", 0))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return counts

    def _query(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            self._tally("read_calls")
            response = self._client.query(**kwargs)
            for item in response.get("Items", []):
                yield from_dynamodb(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs = {**kwargs, "ExclusiveStartKey": response["LastEvaluatedKey"]}
