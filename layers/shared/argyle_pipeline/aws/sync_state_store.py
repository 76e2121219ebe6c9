"""The one place that talks to the sync-state table (DynamoDB): what we know about each account
and user, the archive of processed webhooks, and the per-event counters.

Items (pk, sk):
    ACCOUNT#<account>  STATE          status (partially_synced | fully_synced), user_id, days_synced,
                                      available_from/to/count, fully_synced_at, partially_synced_at,
                                      last_event, last_event_received_at_ms, updated_at,
                                      reconciled_at, reconciled_full_at, last_reconcile (scope, drift
                                      by kind, argyle_calls), drift_<kind>_total (summed),
                                      connection_status, error_code, scanned_at, last_account_event,
                                      lookup ("SHARD#00".."SHARD#15": the reconcile scheduler's view),
                                      health: last_sync (event, at, from, to), data_as_of,
                                      last_counts (stored_live, argyle_count, at), last_failure
                                      (event, at, reason, attempts): see sync/account_health.py
                      (purged)        status "purged" or "purging", purged_at, removed_received_at_ms,
                                      purge_reason, deleted (counts): no personal data, no lookup
    USER#<user>        ACCOUNT#<acc>  a link: the user holds this account (written once per account)
    USER#<user>        PROFILE        user_id, resource (the webhook's `resource` map), synced_at,
                                      received_at_ms
    EVENT#<sha256>     ARCHIVE        event, body (the exact bytes), received_at_ms, processed_at,
                                      expires_at (TTL), lookup ("ARCHIVE#account:<id>" or
                                      "ARCHIVE#user:<id>": the archive of one account, for purging)

The sparse GSI Lookups (lookup + pk, projecting status and connection_status) serves both reads
by something other than the key: every account (16 shards, so that no index partition takes
every account's writes), an account's archived bodies and its event counters.
    COUNTS#<nn>        EVENT#<event>#<group>
                                      count, event, group_id, last_key (the dedupe key counted last),
                                      last_processed_at: one counter per message group and event,
                                      nn = the group's shard (COUNT_SHARDS); lookup
                                      ("COUNTERS#account:<id>" or "COUNTERS#user:<id>", for purging)
    COUNTS             EVENT#<event>  count, last_processed_at: written by stacks before the
                                      per-group counters (every record's transaction touched it);
                                      still summed by event_counts()
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from argyle_pipeline.aws.activity_store import from_dynamodb

FULLY_SYNCED = "fully_synced"
PARTIALLY_SYNCED = "partially_synced"
PURGING = "purging"
PURGED = "purged"
COUNTS_PK = "COUNTS"
# Event counters: one item per message group and event, spread over this many partitions so that
# event_counts() reads them with a few queries.
COUNT_SHARDS = 16
ACCOUNT_SHARDS = 16
LOOKUP_INDEX = "Lookups"
_BATCH_WRITE = 25
_serializer = TypeSerializer()


def account_key(account_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": "STATE"}}


def user_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "PROFILE"}}


def event_key(dedupe_key: str) -> dict[str, Any]:
    return {"pk": {"S": f"EVENT#{dedupe_key}"}, "sk": {"S": "ARCHIVE"}}


def account_shard(account_id: str) -> str:
    """Which of ACCOUNT_SHARDS partitions of the Lookups index lists the account: spread so that no
    index partition takes every account's writes."""
    return f"SHARD#{int(hashlib.sha256(account_id.encode()).hexdigest()[:8], 16) % ACCOUNT_SHARDS:02d}"


def count_key(event: str, group_id: str) -> dict[str, Any]:
    """A group's counter of one event: written only by that group's records, which SQS FIFO hands
    out one at a time, so no two concurrent records ever write the same counter."""
    shard = int(hashlib.sha256(group_id.encode()).hexdigest()[:8], 16) % COUNT_SHARDS
    return {"pk": {"S": f"{COUNTS_PK}#{shard:02d}"}, "sk": {"S": f"EVENT#{event}#{group_id}"}}


def archive_lookup(group_id: str) -> str:
    return f"ARCHIVE#{group_id}"


def counters_lookup(group_id: str) -> str:
    return f"COUNTERS#{group_id}"


def _conditional_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", {}) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class SyncStateStore:
    def __init__(self, table_name: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self.table_name = table_name

    # --- accounts -------------------------------------------------------------------------------

    def mark_fully_synced(self, account_id: str, user_id: str | None, synced_at: str) -> None:
        self._update_account(account_id, user_id, synced_at,
                             sets=["#status = :status", "#at = :at"],
                             names={"#status": "status", "#at": "fully_synced_at"},
                             values={":status": FULLY_SYNCED, ":at": synced_at})

    def mark_resynced(self, account_id: str, user_id: str | None, synced_at: str, *, removed: int) -> None:
        """A re-sync from scratch finished: when, and how many stored activities Argyle no longer had."""
        self._update_account(account_id, user_id, synced_at, sets=["#at = :at", "#removed = :removed"],
                             names={"#at": "resynced_at", "#removed": "resync_removed"},
                             values={":at": synced_at, ":removed": removed})

    def record_reconcile(self, account_id: str, user_id: str | None, reconciled_at: str, *, scope: str,
                         drift: Mapping[str, int], argyle_calls: int) -> None:
        """A reconcile finished: when, what it found (and repaired) by kind, and, summed over time,
        every drift found in this account."""
        sets = ["#at = :at", "#last = :last"]
        names = {"#at": "reconciled_at", "#last": "last_reconcile"}
        values: dict[str, Any] = {":at": reconciled_at, ":last": {"scope": scope, "at": reconciled_at,
                                                                  "drift": dict(drift), "argyle_calls": argyle_calls}}
        if scope == "full":
            sets.append("#full = :at")
            names["#full"] = "reconciled_full_at"
        adds = []
        for kind, n in drift.items():
            if n:
                names[f"#d_{kind}"] = f"drift_{kind}_total"
                values[f":d_{kind}"] = n
                adds.append(f"#d_{kind} :d_{kind}")
        self._update_account(account_id, user_id, reconciled_at, sets=sets, names=names, values=values,
                             adds=adds)

    def record_sync(self, account_id: str, user_id: str | None, synced_at: str, *, event: str,
                    covered_from: str | None, covered_to: str | None, exact: bool,
                    counts: Mapping[str, int] | None = None) -> bool:
        """An event's work finished: the account's last successful sync and what it covered (None:
        the whole account, or the ids the event named); `exact`: the stored copy was just found
        equal to Argyle ("data as of"); `counts`: stored live and Argyle's count, when compared.
        True when this is the account's first data_as_of (its first exact copy)."""
        sync: dict[str, Any] = {"event": event, "at": synced_at}
        if covered_from or covered_to:
            sync["from"], sync["to"] = covered_from, covered_to
        sets, names = ["#sync = :sync"], {"#sync": "last_sync"}
        values: dict[str, Any] = {":sync": {k: v for k, v in sync.items() if v is not None}}
        if exact:
            sets.append("#asof = :at")
            names["#asof"] = "data_as_of"
            values[":at"] = synced_at
        if counts is not None:
            sets.append("#counts = :counts")
            names["#counts"] = "last_counts"
            values[":counts"] = {**counts, "at": synced_at}
        old = self._update_account(account_id, user_id, synced_at, sets=sets, names=names, values=values,
                                   return_old=True)
        return exact and "data_as_of" not in old

    def record_failure(self, account_id: str, *, event: str, failed_at: str, reason: str, attempts: int) -> bool:
        """A record of the account failed (it is retried by SQS): when, why (one line), which attempt.
        Best effort by design: one unconditional SET of its own attribute (it contends with no other
        write), never on a purged account; False when it could not be written (the caller logs it
        and the record's failure goes on as before)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.update_item(
                TableName=self.table_name, Key=account_key(account_id),
                UpdateExpression="SET #account = :account, #lookup = :lookup, #failure = :failure",
                ConditionExpression="attribute_not_exists(#status) OR NOT #status IN (:purging, :purged)",
                ExpressionAttributeNames={"#account": "account_id", "#lookup": "lookup", "#failure": "last_failure",
                                          "#status": "status"},
                ExpressionAttributeValues={k: _serializer.serialize(v) for k, v in {
                    ":account": account_id, ":lookup": account_shard(account_id),
                    ":failure": {"event": event, "at": failed_at, "reason": reason.splitlines()[0][:300] if reason
                                 else "", "attempts": attempts},
                    ":purging": PURGING, ":purged": PURGED}.items()})
        except (BotoCoreError, ClientError):  # the record failed already; this note must not fail it otherwise
            return False
        return True

    def account_states(self, account_ids: list[str], attributes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The state items of these accounts (BatchGetItem, 100 a call; `attributes` projects them):
        the scheduled health check reads what the Lookups index does not project."""
        states: list[dict[str, Any]] = []
        projection: dict[str, Any] = {}
        if attributes:
            projection = {"ProjectionExpression": ", ".join(f"#a{i}" for i in range(len(attributes))),
                          "ExpressionAttributeNames": {f"#a{i}": a for i, a in enumerate(attributes)}}
        for start in range(0, len(account_ids), 100):
            pending: dict[str, Any] = {self.table_name: {
                "Keys": [account_key(a) for a in account_ids[start:start + 100]], **projection}}
            for round_no in range(8):
                if round_no:
                    time.sleep(min(2.0, 0.05 * 2 ** round_no))  # throttled: back off before asking again
                response = self._client.batch_get_item(RequestItems=pending)
                states.extend(from_dynamodb(item) for item in response.get("Responses", {}).get(self.table_name, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
            else:
                raise RuntimeError("BatchGetItem left account states unread")
        return states

    def mark_partially_synced(self, account_id: str, user_id: str | None, days_synced: int | None,
                              synced_at: str) -> None:
        """Records days_synced; the status becomes partially_synced only when the account has none
        yet (`if_not_exists`), so a fully synced account is never downgraded, in a single write."""
        sets = ["#status = if_not_exists(#status, :status)", "#at = :at"]
        names = {"#status": "status", "#at": "partially_synced_at"}
        values: dict[str, Any] = {":status": PARTIALLY_SYNCED, ":at": synced_at}
        if days_synced is not None:
            sets.append("#days = :days")
            names["#days"] = "days_synced"
            values[":days"] = days_synced
        self._update_account(account_id, user_id, synced_at, sets=sets, names=names, values=values)

    def record_availability(
        self,
        account_id: str,
        user_id: str | None,
        *,
        available_from: str | None,
        available_to: str | None,
        available_count: int | None,
        event: str,
        received_at_ms: int,
        updated_at: str,
        unless_fully_synced: bool = False,
    ) -> bool:
        """available_* as of the event Argyle delivered last (by our receive time): an event
        received earlier but processed later (a long sync's last part) does not overwrite it.
        `unless_fully_synced`: a partial sync's window must not replace a full sync's. False when
        a newer record won."""
        from botocore.exceptions import ClientError

        names = {"#event": "last_event", "#received": "last_event_received_at_ms"}
        values: dict[str, Any] = {":event": event, ":received": received_at_ms}
        sets, removes = ["#event = :event", "#received = :received"], []
        for attribute, value in (("available_from", available_from), ("available_to", available_to),
                                 ("available_count", available_count)):
            names["#" + attribute] = attribute
            if value is None:
                removes.append("#" + attribute)
            else:
                values[":" + attribute] = value
                sets.append(f"#{attribute} = :{attribute}")
        condition = "(attribute_not_exists(#received) OR #received <= :received)"
        if unless_fully_synced:
            names["#status"] = "status"
            values[":full"] = FULLY_SYNCED
            condition += " AND (attribute_not_exists(#status) OR #status <> :full)"
        try:
            self._update_account(account_id, user_id, updated_at, sets=sets, removes=removes, names=names,
                                 values=values, condition=condition)
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def _update_account(self, account_id: str, user_id: str | None, updated_at: str, *, sets: list[str],
                        names: dict[str, str], values: dict[str, Any], removes: list[str] | None = None,
                        adds: list[str] | None = None, condition: str | None = None,
                        return_old: bool = False) -> dict[str, Any]:
        names = {**names, "#account": "account_id", "#updated": "updated_at", "#lookup": "lookup"}
        values = {**values, ":account": account_id, ":updated": updated_at, ":lookup": account_shard(account_id)}
        # The shard never changes, so this SET never rewrites the index entry.
        sets = ["#account = :account", "#updated = :updated", "#lookup = :lookup", *sets]
        if user_id:
            names["#user"] = "user_id"
            values[":user"] = user_id
            sets.append("#user = :user")
            names["#linked"] = "user_linked"
            values[":linked"] = user_id
            sets.append("#linked = :linked")
        update = ("SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
                  + (" ADD " + ", ".join(adds) if adds else ""))
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": account_key(account_id),
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {k: _serializer.serialize(v) for k, v in values.items()},
        }
        if condition:
            kwargs["ConditionExpression"] = condition
        if user_id or return_old:
            kwargs["ReturnValues"] = "UPDATED_OLD"
        response = self._client.update_item(**kwargs)
        if user_id and (response.get("Attributes") or {}).get("user_linked", {}).get("S") != user_id:
            # First time this account is seen with this user: the link a user's purge reads.
            self._client.put_item(TableName=self.table_name, Item={
                "pk": {"S": f"USER#{user_id}"}, "sk": {"S": f"ACCOUNT#{account_id}"},
                "account_id": {"S": account_id}})
        old: dict[str, Any] = response.get("Attributes") or {}
        return old

    def account_state(self, account_id: str) -> dict[str, Any] | None:
        return self._get(account_key(account_id))

    def account_ids(self) -> Iterator[str]:
        """Every account with a (not purged) state, from the Lookups index: one Query per shard,
        reading ids only (not the archive of webhook bodies that a Scan would read)."""
        for account, _ in self.account_summaries():
            yield account

    def account_summaries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(account, {status, connection_status}) of every account with a (not purged) state."""
        for shard in range(ACCOUNT_SHARDS):
            for item in self._query_lookup(f"SHARD#{shard:02d}"):
                summary: dict[str, Any] = {k: item[k]["S"] for k in ("status", "connection_status") if k in item}
                yield item["pk"]["S"].removeprefix("ACCOUNT#"), summary

    def _query_lookup(self, lookup: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "IndexName": LOOKUP_INDEX,
            "KeyConditionExpression": "#lookup = :lookup",
            "ExpressionAttributeNames": {"#lookup": "lookup"},
            "ExpressionAttributeValues": {":lookup": {"S": lookup}},
        }
        while True:
            response = self._client.query(**kwargs)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def accounts(self) -> Iterator[dict[str, Any]]:
        """Every account's state (a Scan: for the CLI and operators, not for the sync path)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "begins_with(pk, :p) AND sk = :s",
            "ExpressionAttributeValues": {":p": {"S": "ACCOUNT#"}, ":s": {"S": "STATE"}},
        }
        while True:
            response = self._client.scan(**kwargs)
            for item in response.get("Items", []):
                yield from_dynamodb(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def record_account_status(self, account_id: str, user_id: str | None, *, event: str, received_at_ms: int,
                              updated_at: str, connection_status: str | None = None, error_code: str | None = None,
                              scanned_at: str | None = None) -> bool:
        """accounts.connected / .failed / .updated: the account's connection as Argyle reported it last
        (by our receive time: an older delivery processed later does not overwrite it)."""
        from botocore.exceptions import ClientError

        names = {"#event": "last_account_event", "#at": "last_account_event_received_at_ms"}
        values: dict[str, Any] = {":event": event, ":at": received_at_ms}
        sets, removes = ["#event = :event", "#at = :at"], []
        for attribute, value in (("connection_status", connection_status), ("error_code", error_code),
                                 ("scanned_at", scanned_at)):
            if value is None and attribute == "error_code" and connection_status is not None:
                names["#error_code"] = "error_code"
                removes.append("#error_code")  # a new status without an error: the old error is gone
            elif value is not None:
                names["#" + attribute] = attribute
                values[":" + attribute] = value
                sets.append(f"#{attribute} = :{attribute}")
        try:
            self._update_account(account_id, user_id, updated_at, sets=sets, removes=removes, names=names,
                                 values=values, condition="attribute_not_exists(#at) OR #at <= :at")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    # --- purging ---------------------------------------------------------------------------------

    def purge_marker(self, account_id: str) -> dict[str, Any] | None:
        """The account's purge marker ({status, removed_received_at_ms, ...}), or None when the
        account is not purged (or being purged). One consistent GetItem of two attributes."""
        response = self._client.get_item(
            TableName=self.table_name, Key=account_key(account_id), ConsistentRead=True,
            ProjectionExpression="#status, #removed, #reason", ExpressionAttributeNames={
                "#status": "status", "#removed": "removed_received_at_ms", "#reason": "purge_reason"})
        item = response.get("Item")
        if not item or item.get("status", {}).get("S") not in (PURGING, PURGED):
            return None
        return from_dynamodb(item)

    def begin_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, at: str) -> None:
        """From now on every message of the account is skipped (see purge_marker). The state keeps
        its other attributes until the purge ends; the account leaves the Lookups index at once."""
        self._client.update_item(
            TableName=self.table_name, Key=account_key(account_id),
            UpdateExpression="SET #status = :status, #removed = :removed, #reason = :reason, #at = :at "
                             "REMOVE #lookup",
            ExpressionAttributeNames={"#status": "status", "#removed": "removed_received_at_ms",
                                      "#reason": "purge_reason", "#at": "purge_started_at", "#lookup": "lookup"},
            ExpressionAttributeValues={":status": {"S": PURGING}, ":removed": {"N": str(removed_received_at_ms)},
                                       ":reason": {"S": reason}, ":at": {"S": at}})

    def finish_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, purged_at: str,
                     deleted: Mapping[str, int]) -> None:
        """Replace the account's state by the final marker: account id, times, counts. Nothing else."""
        self._client.put_item(TableName=self.table_name, Item={
            **account_key(account_id), "account_id": {"S": account_id}, "status": {"S": PURGED},
            "purged_at": {"S": purged_at}, "removed_received_at_ms": {"N": str(removed_received_at_ms)},
            "purge_reason": {"S": reason}, "deleted": _serializer.serialize(dict(deleted))})

    def forget_purge(self, account_id: str) -> None:
        """Argyle reports the account connected again: it starts afresh (the marker goes)."""
        self._client.delete_item(TableName=self.table_name, Key=account_key(account_id))

    def archived_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """Up to `limit` keys of the archived bodies of a message group (account:<id> or user:<id>)."""
        keys = []
        for item in self._query_lookup(archive_lookup(group_id)):
            keys.append({"pk": item["pk"], "sk": item["sk"]})
            if len(keys) >= limit:
                break
        return keys

    def counter_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """Up to `limit` keys of a message group's event counters: a purge takes them too."""
        keys = []
        for item in self._query_lookup(counters_lookup(group_id)):
            keys.append({"pk": item["pk"], "sk": item["sk"]})
            if len(keys) >= limit:
                break
        return keys

    def user_accounts(self, user_id: str) -> list[str]:
        """The accounts linked to the user (the links written the first time each was seen)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "KeyConditionExpression": "pk = :p AND begins_with(sk, :a)",
            "ExpressionAttributeValues": {":p": {"S": f"USER#{user_id}"}, ":a": {"S": "ACCOUNT#"}},
        }
        accounts: list[str] = []
        while True:
            response = self._client.query(**kwargs)
            accounts.extend(item["sk"]["S"].removeprefix("ACCOUNT#") for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return accounts
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def unlink_user(self, user_id: str, account_id: str) -> None:
        self.delete_keys([{"pk": {"S": f"USER#{user_id}"}, "sk": {"S": f"ACCOUNT#{account_id}"}}])

    def delete_user(self, user_id: str) -> None:
        self.delete_keys([user_key(user_id)])

    def delete_keys(self, keys: list[dict[str, Any]], *, max_rounds: int = 8) -> int:
        """Delete items by key, 25 per BatchWriteItem, resending what DynamoDB leaves unprocessed;
        raises when some are still left (the message is retried: deleting again is harmless)."""
        for start in range(0, len(keys), _BATCH_WRITE):
            pending = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + _BATCH_WRITE]]
            for round_no in range(max_rounds):
                if round_no:
                    time.sleep(min(2.0, 0.05 * 2 ** round_no))  # throttled: back off before resending
                response = self._client.batch_write_item(RequestItems={self.table_name: pending})
                pending = (response.get("UnprocessedItems") or {}).get(self.table_name, [])
                if not pending:
                    break
            else:
                raise RuntimeError(f"BatchWriteItem left {len(pending)} deletes unprocessed")
        return len(keys)

    # --- users ----------------------------------------------------------------------------------

    def put_user(self, user_id: str, resource: Mapping[str, Any], synced_at: str,
                 received_at_ms: int) -> bool:
        """The user's record from users.fully_synced; an older delivery does not replace a newer one."""
        from botocore.exceptions import ClientError

        item = {**user_key(user_id), "user_id": {"S": user_id},
                "resource": _serializer.serialize(dict(resource)),
                "synced_at": {"S": synced_at}, "received_at_ms": {"N": str(received_at_ms)}}
        try:
            self._client.put_item(
                TableName=self.table_name, Item=item,
                ConditionExpression="attribute_not_exists(pk) OR received_at_ms <= :r",
                ExpressionAttributeValues={":r": {"N": str(received_at_ms)}})
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def user(self, user_id: str) -> dict[str, Any] | None:
        return self._get(user_key(user_id))

    # --- archive and counters -------------------------------------------------------------------

    def archive_event(self, dedupe_key: str, event: str, body: bytes, *, received_at_ms: int,
                      processed_at: str, expires_at: int, group_id: str = "") -> bool:
        """Keep the exact body for replay and count the event once, touching no item that other
        message groups write (no transaction: concurrent records never cancel each other).

        1. A consistent read of the archive item: there already, the event was counted when it was
           archived (a redelivery after its idempotency record expired). Returns False.
        2. The group's counter of the event: ADD 1, unless its last counted key is this one. An
           earlier attempt of this record that counted and then failed left its own key there, and
           nothing else of the group ran since (FIFO hands out a group's next record only after this
           one), so a retry never counts twice.
        3. The archive item, conditional on not existing.
        A failure at any step raises; the record is retried and resumes where the last one stopped.
        """
        from botocore.exceptions import ClientError

        if self._client.get_item(TableName=self.table_name, Key=event_key(dedupe_key), ConsistentRead=True,
                                 ProjectionExpression="pk").get("Item"):
            return False
        try:
            self._client.update_item(
                TableName=self.table_name, Key=count_key(event, group_id),
                UpdateExpression="ADD #count :one SET #last = :at, #key = :key, #event = :event, #group = :group"
                                 + (", #lookup = :lookup" if group_id else ""),
                ConditionExpression="attribute_not_exists(#key) OR #key <> :key",
                ExpressionAttributeNames={"#count": "count", "#last": "last_processed_at", "#key": "last_key",
                                          "#event": "event", "#group": "group_id",
                                          **({"#lookup": "lookup"} if group_id else {})},
                ExpressionAttributeValues={":one": {"N": "1"}, ":at": {"S": processed_at}, ":key": {"S": dedupe_key},
                                           ":event": {"S": event}, ":group": {"S": group_id},
                                           **({":lookup": {"S": counters_lookup(group_id)}} if group_id else {})})
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            # Counted already, by an attempt of this record that failed before the archive: archive it now.
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={**event_key(dedupe_key), "event": {"S": event}, "body": {"B": body},
                      "received_at_ms": {"N": str(received_at_ms)},
                      "processed_at": {"S": processed_at}, "expires_at": {"N": str(expires_at)},
                      **({"lookup": {"S": archive_lookup(group_id)}} if group_id else {})},
                ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def archived_event(self, dedupe_key: str) -> dict[str, Any] | None:
        item = self._get(event_key(dedupe_key))
        if item is not None and "body" in item:
            item["body"] = bytes(item["body"])  # boto3's Binary wrapper -> the exact bytes
        return item

    def event_counts(self) -> dict[str, int]:
        """Events archived, by name: the sum of every group's counters (COUNT_SHARDS queries), and of
        the unsharded COUNTS items a stack kept before them."""
        counts: dict[str, int] = {}
        for pk in [*(f"{COUNTS_PK}#{shard:02d}" for shard in range(COUNT_SHARDS)), COUNTS_PK]:
            kwargs: dict[str, Any] = {
                "TableName": self.table_name, "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": pk}},
            }
            while True:
                response = self._client.query(**kwargs)
                for item in response.get("Items", []):
                    event = item["event"]["S"] if "event" in item else item["sk"]["S"].removeprefix("EVENT#")
                    counts[event] = counts.get(event, 0) + int(item["count"]["N"])
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return counts

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        response = self._client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        item = response.get("Item")
        return from_dynamodb(item) if item else None
