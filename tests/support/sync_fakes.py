"""In-memory stand-ins for the sync's stores and queue, for unit tests of the logic. They keep
the same rules as the DynamoDB stores (monotonic versions, final removals) in a few lines, and
record what was asked of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from argyle_pipeline.aws.activity_store import activity_version, start_key
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.ports import ChangeSet, StoredKey, UpsertResult


class MemoryActivities:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.upsert_many_calls: list[int] = []
        self.upsert_one_calls = 0
        self.remove_calls: list[list[str]] = []
        self.changes: ChangeSet | None = None

    def track_changes(self) -> ChangeSet:
        self.changes = ChangeSet()
        return self.changes

    def _write(self, activity: Any, synced_at: str, resync_marker: str | None = None) -> UpsertResult:
        key = (activity.account, activity.id)
        current = self.items.get(key)
        if current is not None and current.get("removed_at") and not resync_marker:
            return UpsertResult(removed=1)
        version = activity_version(activity.updated_at)
        if current is not None and "version" in current and current["version"] > version:
            return UpsertResult(stale=1)
        self.items[key] = {"version": version, "activity": activity.raw, "synced_at": synced_at,
                           "resync_marker": resync_marker, "start_key": start_key(activity.start_date)}
        if current is None or "version" not in current:
            if self.changes is not None:
                self.changes.added.append(activity.id)
            return UpsertResult(written=1, created=1)
        if self.changes is not None and current["version"] < version:
            self.changes.updated.append(activity.id)
        return UpsertResult(written=1, changed=int(current["version"] < version))

    def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult:
        self.upsert_many_calls.append(len(activities))
        total = UpsertResult()
        for activity in activities:
            total += self._write(activity, synced_at, resync_marker)
        return total

    def live_ids_not_marked(self, account_id: str, resync_marker: str) -> list[str]:
        return [key[1] for key, item in self.items.items()
                if key[0] == account_id and "activity" in item and item.get("resync_marker") != resync_marker]

    def upsert_one(self, activity: Any, synced_at: str) -> UpsertResult:
        self.upsert_one_calls += 1
        return self._write(activity, synced_at)

    def remove(self, account_id: str, activity_ids: Sequence[str], removed_at: str) -> int:
        ids = list(dict.fromkeys(activity_ids))
        self.remove_calls.append(ids)
        if self.changes is not None:
            self.changes.removed.extend(i for i in ids if "activity" in self.items.get((account_id, i), {}))
        for activity_id in ids:
            self.items[(account_id, activity_id)] = {"removed_at": removed_at}
        return len(ids)

    def item_ids(self, account_id: str, limit: int = 1_000) -> list[str]:
        return [key[1] for key in self.items if key[0] == account_id][:limit]

    def delete_many(self, account_id: str, activity_ids: Sequence[str]) -> int:
        for activity_id in set(activity_ids):
            self.items.pop((account_id, activity_id), None)
        return len(set(activity_ids))

    def stored_keys(self, account_id: str) -> list[StoredKey]:
        return sorted((StoredKey(item["start_key"], key[1]) for key, item in self.items.items()
                       if key[0] == account_id and "activity" in item),
                      key=lambda k: (k.start_key, k.activity_id))

    def live(self, account_id: str) -> dict[str, dict[str, Any]]:
        return {key[1]: item["activity"] for key, item in self.items.items()
                if key[0] == account_id and "activity" in item}


class MemoryState:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.archive: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.group_counters: set[tuple[str, str]] = set()  # (group, event): the per-group counters
        self.links: set[tuple[str, str]] = set()


    def mark_fully_synced(self, account_id: str, user_id: str | None, synced_at: str) -> None:
        self._account(account_id, user_id).update(status="fully_synced", fully_synced_at=synced_at)

    def mark_partially_synced(self, account_id: str, user_id: str | None, days_synced: int | None,
                              synced_at: str) -> None:
        state = self._account(account_id, user_id)
        state.setdefault("status", "partially_synced")
        state.update(days_synced=days_synced, partially_synced_at=synced_at)

    def record_availability(self, account_id: str, user_id: str | None, *, available_from: str | None,
                            available_to: str | None, available_count: int | None, event: str,
                            received_at_ms: int, updated_at: str, unless_fully_synced: bool = False) -> bool:
        state = self._account(account_id, user_id)
        if state.get("last_event_received_at_ms", -1) > received_at_ms:
            return False
        if unless_fully_synced and state.get("status") == "fully_synced":
            return False
        state.update(available_from=available_from, available_to=available_to,
                     available_count=available_count, last_event=event,
                     last_event_received_at_ms=received_at_ms)
        return True

    def mark_resynced(self, account_id: str, user_id: str | None, synced_at: str, *, removed: int) -> None:
        self._account(account_id, user_id).update(resynced_at=synced_at, resync_removed=removed)

    def record_sync(self, account_id: str, user_id: str | None, synced_at: str, *, event: str,
                    covered_from: str | None, covered_to: str | None, exact: bool,
                    counts: Mapping[str, int] | None = None) -> bool:
        state = self._account(account_id, user_id)
        first_exact = exact and "data_as_of" not in state
        state["account_id"] = account_id
        state["last_sync"] = {k: v for k, v in {"event": event, "at": synced_at, "from": covered_from,
                                                 "to": covered_to}.items() if v is not None}
        if exact:
            state["data_as_of"] = synced_at
        if counts is not None:
            state["last_counts"] = {**counts, "at": synced_at}
        return first_exact

    def record_reconcile(self, account_id: str, user_id: str | None, reconciled_at: str, *, scope: str,
                         drift: Mapping[str, int], argyle_calls: int) -> None:
        self._account(account_id, user_id).update(
            reconciled_at=reconciled_at,
            last_reconcile={"scope": scope, "drift": dict(drift), "argyle_calls": argyle_calls})

    def put_user(self, user_id: str, resource: Mapping[str, Any], synced_at: str,
                 received_at_ms: int) -> bool:
        self.users[user_id] = {"resource": dict(resource), "synced_at": synced_at}
        return True

    def archive_event(self, dedupe_key: str, event: str, body: bytes, *, received_at_ms: int,
                      processed_at: str, expires_at: int, group_id: str = "") -> bool:
        if dedupe_key in self.archive:
            return False
        self.archive[dedupe_key] = {"event": event, "body": body, "expires_at": expires_at, "group": group_id}
        self.counts[event] = self.counts.get(event, 0) + 1
        self.group_counters.add((group_id, event))
        return True

    def record_account_status(self, account_id: str, user_id: str | None, *, event: str, received_at_ms: int,
                              updated_at: str, connection_status: str | None = None, error_code: str | None = None,
                              scanned_at: str | None = None) -> bool:
        state = self._account(account_id, user_id)
        state.update(last_account_event=event, connection_status=connection_status or state.get("connection_status"),
                     error_code=error_code, scanned_at=scanned_at or state.get("scanned_at"))
        return True

    # purging
    def _account(self, account_id: str, user_id: str | None) -> dict[str, Any]:
        state = self.accounts.setdefault(account_id, {})
        if user_id:
            state["user_id"] = user_id
            self.links.add((user_id, account_id))
        return state

    def purge_marker(self, account_id: str) -> dict[str, Any] | None:
        state = self.accounts.get(account_id) or {}
        return dict(state) if state.get("status") in ("purging", "purged") else None

    def begin_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, at: str) -> None:
        self.accounts.setdefault(account_id, {}).update(status="purging",
                                                        removed_received_at_ms=removed_received_at_ms,
                                                        purge_reason=reason)

    def finish_purge(self, account_id: str, *, removed_received_at_ms: int, reason: str, purged_at: str,
                     deleted: Mapping[str, int]) -> None:
        self.accounts[account_id] = {"account_id": account_id, "status": "purged", "purged_at": purged_at,
                                     "removed_received_at_ms": removed_received_at_ms, "purge_reason": reason,
                                     "deleted": dict(deleted)}

    def forget_purge(self, account_id: str) -> None:
        self.accounts.pop(account_id, None)

    def archived_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
        return [{"key": k} for k, v in self.archive.items() if v.get("group") == group_id][:limit]

    def counter_keys(self, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
        return [{"counter": c} for c in sorted(self.group_counters) if c[0] == group_id][:limit]

    def delete_keys(self, keys: list[dict[str, Any]]) -> int:
        for key in keys:
            if "counter" in key:
                self.group_counters.discard(key["counter"])
            else:
                self.archive.pop(key["key"], None)
        return len(keys)

    def user_accounts(self, user_id: str) -> list[str]:
        return [a for u, a in self.links if u == user_id]

    def unlink_user(self, user_id: str, account_id: str) -> None:
        self.links.discard((user_id, account_id))

    def delete_user(self, user_id: str) -> None:
        self.users.pop(user_id, None)


class MemoryQueue:
    def __init__(self) -> None:
        self.sent: list[QueuedEvent] = []

    def send(self, event: QueuedEvent) -> str:
        self.sent.append(event)
        return f"m-{len(self.sent)}"
