"""Change events for the user's own systems (no AWS here): what one processed message really changed,
as EventBridge events. Ids and counts only: never an activity's earnings, addresses or any other
field. The schema (docs/change-events.schema.json) is generated from these models.

    activities.changed  account, user, ids added / updated / removed (and their counts)
    account.synced      the account is exact again (a listing of the whole account, a re-sync, a
                        reconcile) after a change, or for the first time, with its data_as_of
    account.purged      the account's data was erased (counts of what went)

Nothing is published for a write that changed nothing (a duplicate webhook, a re-listing of the same
data: the store's ChangeSet is empty), nor while a replay or re-sync runs unless it was asked to
(`quiet`). See docs/change-events.md for delivery (at least once, `event_id` to deduplicate).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from argyle_pipeline.sync.ports import ChangeSet

SOURCE = "argyle-activity-sync"
# Ids kept per message (in its stored outcome) and per event (EventBridge takes 256 KiB an entry):
# beyond MAX_IDS the counts stay exact and `ids_complete` is false (read the account instead).
MAX_IDS = 5_000
IDS_PER_EVENT = 1_000


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="Stable across retries of the same message: deduplicate on it.")
    account: str
    user: str | None = None


class ActivitiesChanged(_Event):
    added: list[str] = Field(default_factory=list, description="ids of activities stored for the first time")
    updated: list[str] = Field(default_factory=list, description="ids whose stored copy Argyle changed")
    removed: list[str] = Field(default_factory=list, description="ids removed (a live copy became a tombstone)")
    counts: dict[Literal["added", "updated", "removed"], int]
    ids_complete: bool = Field(description="false: more ids changed than the events carry; counts are exact")
    part: int = Field(ge=1, description="this event's part of the message's ids (1..parts)")
    parts: int = Field(ge=1)


class AccountSynced(_Event):
    data_as_of: str = Field(description="when the stored copy was found equal to Argyle (UTC, ISO 8601)")
    cause: str = Field(description="the event or request whose work made it exact")


class AccountPurged(_Event):
    deleted: dict[str, int] = Field(description="what was erased, by kind (counts only)")


DETAIL_TYPES: dict[str, type[_Event]] = {"activities.changed": ActivitiesChanged, "account.synced": AccountSynced,
                                         "account.purged": AccountPurged}


def summarise(changes: ChangeSet, limit: int = MAX_IDS) -> dict[str, Any]:
    """The message's net change set, for its outcome: an id added then removed in the same message
    is neither; one added then updated is added; at most `limit` ids are kept (counts stay exact)."""
    removed = list(dict.fromkeys(changes.removed))
    gone = set(removed)
    added = [i for i in dict.fromkeys(changes.added) if i not in gone]
    new = set(added)
    removed = [i for i in removed if i not in set(changes.added)]
    updated = [i for i in dict.fromkeys(changes.updated) if i not in new and i not in gone]
    counts = {"added": len(added), "updated": len(updated), "removed": len(removed)}
    kept: dict[str, list[str]] = {}
    room = limit
    for kind, ids in (("added", added), ("updated", updated), ("removed", removed)):
        kept[kind] = ids[:max(room, 0)]
        room -= len(kept[kind])
    return {**kept, "counts": counts, "ids_complete": sum(counts.values()) <= limit}


def _event_id(message_id: str, detail_type: str, part: int) -> str:
    return hashlib.sha256(f"{message_id}|{detail_type}|{part}".encode()).hexdigest()[:32]


def change_events(outcome: Mapping[str, Any], *, account: str, user: str | None,
                  message_id: str) -> list[tuple[str, _Event]]:
    """(detail type, detail) of every event a processed message's outcome calls for."""
    if outcome.get("quiet"):
        return []
    events: list[tuple[str, _Event]] = []
    changes = outcome.get("changes") or {}
    ids = [(kind, i) for kind in ("added", "updated", "removed") for i in changes.get(kind) or []]
    if any((changes.get("counts") or {}).values()):
        chunks = [ids[start:start + IDS_PER_EVENT] for start in range(0, len(ids), IDS_PER_EVENT)] or [[]]
        for n, chunk in enumerate(chunks, start=1):
            events.append(("activities.changed", ActivitiesChanged(
                event_id=_event_id(message_id, "activities.changed", n), account=account, user=user,
                added=[i for k, i in chunk if k == "added"], updated=[i for k, i in chunk if k == "updated"],
                removed=[i for k, i in chunk if k == "removed"], counts=changes["counts"],
                ids_complete=bool(changes.get("ids_complete", True)), part=n, parts=len(chunks))))
    if outcome.get("newly_exact") and outcome.get("data_as_of"):
        events.append(("account.synced", AccountSynced(
            event_id=_event_id(message_id, "account.synced", 1), account=account, user=user,
            data_as_of=str(outcome["data_as_of"]), cause=str(outcome.get("event", "")))))
    if outcome.get("purged") is not None:
        events.append(("account.purged", AccountPurged(
            event_id=_event_id(message_id, "account.purged", 1), account=account, user=user,
            deleted={k: int(v) for k, v in dict(outcome["purged"]).items()})))
    return events


def should_publish(outcome: Mapping[str, Any], message_id: str) -> bool:
    """A fresh outcome is published. A stored one (`duplicate`: the idempotency table answered) is
    published again only for a redelivery of the message that produced it (its earlier attempt
    failed after processing, before or while publishing): a duplicate webhook is another message,
    and publishes nothing, however often SQS handed it out before."""
    return not outcome.get("duplicate") or (bool(message_id) and outcome.get("message_id") == message_id)


def json_schema() -> dict[str, Any]:
    """docs/change-events.schema.json: one schema per detail type, keyed by EventBridge's detail-type."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "argyle-activity-sync change events (EventBridge detail, by detail-type)",
        "description": f"source: {SOURCE}. Ids and counts only.",
        "oneOf": [{"title": name, **model.model_json_schema()} for name, model in DETAIL_TYPES.items()],
    }
