"""Change events (sync/change_events.py) from what the sync really changed, with in-memory stores:
nothing for a write that changed nothing, exactly one change for an added, an updated and a removed
activity, account.purged for a purge, nothing while a replay or re-sync runs unless asked, and no
field of an activity besides its id."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from argyle_pipeline.sync.change_events import (
    MAX_IDS,
    ActivitiesChanged,
    change_events,
    json_schema,
    should_publish,
    summarise,
)
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.messages import (
    PURGE_EVENT,
    RESYNC_EVENT,
    PurgeJob,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from argyle_pipeline.sync.ports import ChangeSet
from tests.support.fake_argyle import FakeArgyle, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState
from tests.unit.test_sync_logic import ACCOUNT, PLENTY, USER, fully_synced

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "change-events.schema.json"


class World:
    """The sync with change tracking on; `publish` is what the handler would publish for a message."""

    def __init__(self, page_limit: int = 200) -> None:
        self.argyle = FakeArgyle(page_limit=page_limit)
        self.activities, self.state, self.queue = MemoryActivities(), MemoryState(), MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue,
                                 SyncOptions(track_changes=True))
        self.n = 0

    def publish(self, body: bytes, *, replay_id: str = "", publish_changes: bool = False,
                remaining_ms: int = PLENTY) -> list[tuple[str, Any]]:
        self.n += 1
        message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="c", received_at_ms=self.n,
                              message_id=f"m-{self.n}", replay_id=replay_id, publish_changes=publish_changes)
        return self._events(message, remaining_ms)

    def publish_queued(self, remaining_ms: int = PLENTY) -> list[list[tuple[str, Any]]]:
        """What each of the sync's own follow-up messages publishes, until none is left."""
        published = []
        while self.queue.sent:
            published.append(self._events(message_from_sqs_record(record_for(self.queue.sent.pop(0))), remaining_ms))
        return published

    def _events(self, message: SyncMessage, remaining_ms: int) -> list[tuple[str, Any]]:
        outcome = self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()
        return change_events(outcome, account=ACCOUNT, user=USER, message_id=message.message_id)


def detail(events: list[tuple[str, Any]], detail_type: str) -> list[dict[str, Any]]:
    return [json.loads(d.model_dump_json()) for t, d in events if t == detail_type]


def test_first_sync_publishes_the_added_ids_and_account_synced() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 5)
    events = world.publish(fully_synced(docs))
    [changed] = detail(events, "activities.changed")
    assert sorted(changed["added"]) == sorted(d["id"] for d in docs) and changed["counts"] == {
        "added": 5, "updated": 0, "removed": 0}
    [synced] = detail(events, "account.synced")
    assert synced["data_as_of"] == world.state.accounts[ACCOUNT]["data_as_of"]


def test_a_duplicate_webhook_and_a_relisting_of_unchanged_data_publish_no_change() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 5)
    world.publish(fully_synced(docs))
    # The same fully_synced again (a duplicate delivery, processed again): Argyle holds the same data
    assert world.publish(fully_synced(docs)) == []
    # An activities.updated naming an activity whose data did not change: nothing at all
    same = world.publish(webhook_body("activities.updated", account=ACCOUNT, user=USER,
                                      updated_activities=[docs[0]["id"]]))
    assert same == []


def test_an_added_an_updated_and_a_removed_activity_each_publish_exactly_one_change() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 5)
    world.publish(fully_synced(docs))
    # Added
    [new] = world.argyle.add(ACCOUNT, 1, first=5)
    added = world.publish(webhook_body("activities.added", account=ACCOUNT, user=USER,
                                       added_from=new["start_date"], added_to=new["start_date"]))
    assert [(c["added"], c["updated"], c["removed"]) for c in detail(added, "activities.changed")] == [
        ([new["id"]], [], [])]
    # Updated
    world.argyle.update(ACCOUNT, docs[1]["id"])
    updated = world.publish(webhook_body("activities.updated", account=ACCOUNT, user=USER,
                                         updated_activities=[docs[1]["id"]]))
    assert [(c["added"], c["updated"], c["removed"]) for c in detail(updated, "activities.changed")] == [
        ([], [docs[1]["id"]], [])]
    # Removed; and the same removal delivered again removes nothing more
    world.argyle.remove(ACCOUNT, docs[2]["id"])
    body = webhook_body("activities.removed", account=ACCOUNT, user=USER, removed_activities=[docs[2]["id"]])
    removed = world.publish(body)
    assert [(c["added"], c["updated"], c["removed"]) for c in detail(removed, "activities.changed")] == [
        ([], [], [docs[2]["id"]])]
    assert world.publish(body) == []


def test_a_purge_publishes_account_purged_with_counts_only() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    world.publish(fully_synced(docs))
    job = PurgeJob(account=ACCOUNT, user=USER, request_id="purge-request-1", reason="erasure",
                   removed_received_at_ms=10**13)
    events = world.publish(webhook_body(PURGE_EVENT, **job.model_dump()))
    [purged] = detail(events, "account.purged")
    assert purged["account"] == ACCOUNT and all(isinstance(v, int) for v in purged["deleted"].values())
    assert purged["deleted"]


def test_no_event_carries_a_field_of_the_activity_besides_its_id() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 4)
    events = world.publish(fully_synced(docs))
    world.argyle.update(ACCOUNT, docs[0]["id"])
    events += world.publish(webhook_body("activities.updated", account=ACCOUNT, user=USER,
                                         updated_activities=[docs[0]["id"]]))
    text = "".join(d.model_dump_json() for _, d in events)
    ids = {d["id"] for d in docs}
    for doc in docs:
        for field, value in doc.items():
            if field in ("id", "account", "user") or value in (None, "", [], {}):
                continue
            for leaf in _leaves(value):
                assert leaf in ids or leaf not in text, (field, leaf)


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    text = str(value)
    return [text] if len(text) >= 4 else []  # short values ("1", "USD") could match by chance


def test_a_replay_or_resync_publishes_nothing_unless_asked() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    assert world.publish(fully_synced(docs), replay_id="r1") == []
    world.activities.items.clear()
    resync = webhook_body(RESYNC_EVENT, account=ACCOUNT, user=USER, request_id="resync-0001")
    assert world.publish(resync) == []
    world.activities.items.clear()
    asked = world.publish(webhook_body(RESYNC_EVENT, account=ACCOUNT, user=USER, request_id="resync-0002",
                                       publish_changes=True))
    assert detail(asked, "activities.changed")[0]["counts"]["added"] == 3


def test_a_resync_continued_in_later_messages_stays_quiet_in_every_part_unless_asked() -> None:
    # Given 6 activities listed 2 a page, and invocations short of time (one page each)
    world = World(page_limit=2)
    docs = world.argyle.add(ACCOUNT, 6)
    # When a re-sync that did not ask for change events runs, part after part
    first = world.publish(webhook_body(RESYNC_EVENT, account=ACCOUNT, user=USER, request_id="resync-0001"),
                          remaining_ms=1)
    later = world.publish_queued(remaining_ms=1)
    # Then no part publishes anything, though every activity was stored by one part or another
    assert len(later) >= 2 and first == [] and later == [[]] * len(later)
    assert set(world.activities.live(ACCOUNT)) == {d["id"] for d in docs}
    # And a re-sync that asked publishes, in its later parts too, every activity it added once
    world.activities.items.clear()
    asked = [world.publish(webhook_body(RESYNC_EVENT, account=ACCOUNT, user=USER, request_id="resync-0002",
                                        publish_changes=True), remaining_ms=1)]
    asked += world.publish_queued(remaining_ms=1)
    added = [i for events in asked for changed in detail(events, "activities.changed") for i in changed["added"]]
    assert len(asked) >= 3 and sorted(added) == sorted(d["id"] for d in docs)


def test_a_stored_outcome_is_published_again_only_for_a_redelivery_of_the_same_message() -> None:
    assert should_publish({"duplicate": False, "message_id": "m-1"}, "m-1")
    # A duplicate webhook is another message (however often SQS handed it out behind a failure)
    assert not should_publish({"duplicate": True, "message_id": "m-1"}, "m-2")
    # The same message again: its first attempt may have failed before or while publishing
    assert should_publish({"duplicate": True, "message_id": "m-1"}, "m-1")
    assert not should_publish({"duplicate": True}, "")


def test_the_net_change_set_and_its_cap() -> None:
    net = summarise(ChangeSet(added=["a", "b", "a"], updated=["b", "c"], removed=["b", "d"]))
    assert net == {"added": ["a"], "updated": ["c"], "removed": ["d"],
                   "counts": {"added": 1, "updated": 1, "removed": 1}, "ids_complete": True}
    many = summarise(ChangeSet(added=[f"id-{n}" for n in range(MAX_IDS + 5)]))
    assert len(many["added"]) == MAX_IDS and many["counts"]["added"] == MAX_IDS + 5 and not many["ids_complete"]
    events = change_events({"changes": many}, account="acc", user=None, message_id="m")
    assert all(isinstance(d, ActivitiesChanged) and d.parts == len(events) for _, d in events)
    assert sum(len(d.added) for _, d in events) == MAX_IDS


def test_the_documented_schema_is_the_models() -> None:
    regenerate = "regenerate: .venv/bin/python scripts/change_events_schema.py"
    assert json.loads(SCHEMA.read_text()) == json_schema(), regenerate


def test_a_replay_asks_for_change_events_through_a_message_attribute() -> None:
    from argyle_pipeline.sync.messages import message_from_sqs_record

    record = {"body": "{}", "attributes": {"MessageGroupId": "account:a"}, "messageAttributes": {
        "replay_id": {"stringValue": "r1", "dataType": "String"},
        "publish_changes": {"stringValue": "true", "dataType": "String"}}}
    asked = message_from_sqs_record(record)
    del record["messageAttributes"]["publish_changes"]  # type: ignore[attr-defined]
    assert asked.publish_changes and asked.replay_id == "r1"
    assert not message_from_sqs_record(record).publish_changes


def test_the_example_consumer_starts_one_job_per_exact_account_whatever_the_duplicates(
        monkeypatch: Any) -> None:
    import importlib.util

    path = SCHEMA.parent / "examples" / "change_event_consumer.py"
    spec = importlib.util.spec_from_file_location("change_event_consumer", path)
    assert spec is not None and spec.loader is not None
    consumer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(consumer)
    jobs: list[tuple[str, str, int]] = []
    monkeypatch.setattr(consumer, "ready", lambda account, as_of, changed: jobs.append((account, as_of, changed)))
    world = World()
    docs = world.argyle.add(ACCOUNT, 3)
    envelopes = [{"detail-type": t, "detail": json.loads(d.model_dump_json())} for t, d in
                 world.publish(fully_synced(docs))]
    seen: OrderedDict[str, None] = OrderedDict()
    changed: dict[str, int] = {}
    for envelope in envelopes + envelopes:  # every event delivered twice
        consumer.handle(envelope, seen, changed)
    assert jobs == [(ACCOUNT, world.state.accounts[ACCOUNT]["data_as_of"], 3)]
