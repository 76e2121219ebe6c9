"""In-memory stand-ins for the sync's stores and queue, for unit tests of the logic. They keep
the same rules as the DynamoDB stores (monotonic versions, final removals) in a few lines, and
record what was asked of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from argyle_pipeline.aws.activity_store import activity_version, start_key
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.ports import StoredKey, UpsertResult


class MemoryActivities:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.upsert_many_calls: list[int] = []
        self.upsert_one_calls = 0
        self.remove_calls: list[list[str]] = []

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
            return UpsertResult(written=1, created=1)
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
        for activity_id in ids:
            self.items[(account_id, activity_id)] = {"removed_at": removed_at}
        return len(ids)

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

    def _account(self, account_id: str, user_id: str | None) -> dict[str, Any]:
        state = self.accounts.setdefault(account_id, {})
        if user_id:
            state["user_id"] = user_id
        return state

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
                      processed_at: str, expires_at: int) -> bool:
        if dedupe_key in self.archive:
            return False
        self.archive[dedupe_key] = {"event": event, "body": body, "expires_at": expires_at}
        self.counts[event] = self.counts.get(event, 0) + 1
        return True


class MemoryQueue:
    def __init__(self) -> None:
        self.sent: list[QueuedEvent] = []

    def send(self, event: QueuedEvent) -> str:
        self.sent.append(event)
        return f"m-{len(self.sent)}"
