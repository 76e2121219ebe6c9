"""A worker's data leaves when the worker leaves: accounts.removed and erasure requests purge an
account, finally (an in-memory Argyle and the stores' in-memory twins)."""

from __future__ import annotations

from typing import Any

import pytest

from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.messages import (
    Continuation,
    PurgeJob,
    ReconcileJob,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from argyle_pipeline.sync.purge import AccountStillConnected
from tests.support.fake_argyle import FakeArgyle, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, OTHER, USER = "acc-1", "acc-2", "user-1"
PLENTY = 10**9


class World:
    def __init__(self) -> None:
        self.argyle = FakeArgyle(page_limit=200)
        self.activities, self.state, self.queue = MemoryActivities(), MemoryState(), MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue, SyncOptions())
        self.clock_ms = 1_000

    def deliver(self, body: bytes, *, account: str = ACCOUNT, remaining_ms: int = PLENTY,
                received_at_ms: int | None = None, group: str | None = None) -> dict[str, Any]:
        if received_at_ms is None:
            self.clock_ms += 1_000
            received_at_ms = self.clock_ms
        message = SyncMessage(body=body, group_id=group or f"account:{account}", correlation_id="corr",
                              received_at_ms=received_at_ms)
        return self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()

    def drain(self, remaining_ms: int = PLENTY) -> list[dict[str, Any]]:
        outcomes = []
        while self.queue.sent:
            message = message_from_sqs_record(record_for(self.queue.sent.pop(0)))
            outcomes.append(self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict())
        return outcomes

    def synced(self, account: str, n: int) -> list[dict[str, Any]]:
        docs = self.argyle.add(account, n)
        self.deliver(fully_synced(account), account=account)
        self.deliver(webhook_body("users.fully_synced", user=USER, resource={"id": USER, "address": "1 Main St"}),
                     group=f"user:{USER}")
        return docs


def fully_synced(account: str) -> bytes:
    return webhook_body("activities.fully_synced", account=account, user=USER, available_from=None,
                        available_to=None, available_count=0)


def removed_body(account: str = ACCOUNT) -> bytes:
    return webhook_body("accounts.removed", account=account, user=USER)


def stored(world: World, account: str) -> list[tuple[str, str]]:
    return [key for key in world.activities.items if key[0] == account]


def test_accounts_removed_purges_everything_of_the_account_and_leaves_only_a_marker():
    # Given a synced account with a tombstone, archived webhooks, and a user with no other account
    world = World()
    docs = world.synced(ACCOUNT, 30)
    world.argyle.remove(ACCOUNT, docs[0]["id"])
    world.deliver(webhook_body("activities.removed", account=ACCOUNT, user=USER, removed_activities=[docs[0]["id"]]))
    assert world.state.archive and world.state.users
    # When the worker revokes access: Argyle deletes the account and sends accounts.removed
    world.argyle.revoke(ACCOUNT)
    outcome = world.deliver(removed_body())
    # Then every item (live and tombstone), every archived body of the account and the user's profile
    # (and its archived webhook) are gone, and what is left is a marker of ids, times and counts
    assert outcome["action"] == "purged"
    # (archived: fully_synced and activities.removed of the account, users.fully_synced of the user)
    assert outcome["purged"] == {"activities": 30, "archived_events": 3, "user_profiles": 1}
    assert stored(world, ACCOUNT) == [] and world.state.users == {} and world.state.archive == {}
    marker = world.state.accounts[ACCOUNT]
    assert set(marker) == {"account_id", "status", "purged_at", "removed_received_at_ms", "purge_reason", "deleted"}
    assert marker["status"] == "purged" and marker["purge_reason"] == "accounts.removed"


def test_a_removal_argyle_contradicts_deletes_nothing_and_is_retried():
    world = World()
    world.synced(ACCOUNT, 10)
    with pytest.raises(AccountStillConnected):
        world.deliver(removed_body())
    assert len(stored(world, ACCOUNT)) == 10 and world.state.purge_marker(ACCOUNT) is None


def test_nothing_received_before_the_removal_writes_again():
    # Given a purged account, and messages of it that were on their way before the removal arrived
    world = World()
    docs = world.synced(ACCOUNT, 10)
    early = world.clock_ms + 500  # received before the removal below
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body())
    world.argyle.add(ACCOUNT, 10)  # Argyle still (or again) answering for the old data, as in a race
    continuation = Continuation(origin_dedupe_key="x" * 64, origin_event="activities.fully_synced", part=1,
                                account=ACCOUNT, user=USER, cursor={"offset": "0"})
    late = [
        fully_synced(ACCOUNT),  # a late duplicate of the first sync
        continuation.body(),
        webhook_body("activities.updated", account=ACCOUNT, user=USER, updated_activities=[docs[1]["id"]]),
        webhook_body("activities.added", account=ACCOUNT, user=USER, added_from=None, added_to=None),
        ReconcileJob(account=ACCOUNT, request_id="reconcile-late", scope="full").body(),
        webhook_body("accounts.updated", account=ACCOUNT, user=USER),
    ]
    # When each is processed (the duplicate received before the removal; the rest whenever)
    outcomes = [world.deliver(late[0], received_at_ms=early)] + [world.deliver(b) for b in late[1:]]
    # Then none wrote anything, not even its archive, and the marker stands
    assert [o["action"] for o in outcomes] == ["skipped_purged"] * len(late)
    assert stored(world, ACCOUNT) == [] and world.state.archive == {}
    assert world.state.accounts[ACCOUNT]["status"] == "purged"


def test_a_late_copy_of_a_sync_received_after_the_removal_restarts_nothing_while_argyle_has_no_account():
    # Given a purged account (Argyle deleted it)
    world = World()
    world.synced(ACCOUNT, 10)
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body())
    # When an old fully_synced of it is delivered late, received after the removal
    outcome = world.deliver(fully_synced(ACCOUNT))
    # Then Argyle, asked, has no such account: it is not a reconnection, nothing is written
    assert outcome["action"] == "skipped_purged"
    assert stored(world, ACCOUNT) == [] and world.state.accounts[ACCOUNT]["status"] == "purged"


def test_after_an_erasure_only_a_reconnection_received_after_it_restarts_the_account():
    # Given an account erased on request while it is still connected at Argyle
    world = World()
    world.synced(ACCOUNT, 12)
    erased_at = world.clock_ms + 1
    world.deliver(PurgeJob(account=ACCOUNT, user=USER, request_id="erasure-0002", reason="erasure",
                           removed_received_at_ms=erased_at).body())
    # When Argyle's periodic scan reports new activities, and a sync received at the erasure's very
    # millisecond arrives
    world.argyle.add(ACCOUNT, 3, first=100)
    added = world.deliver(webhook_body("activities.added", account=ACCOUNT, user=USER, added_from=None,
                                       added_to=None))
    same_moment = world.deliver(fully_synced(ACCOUNT), received_at_ms=erased_at)
    # Then neither writes anything: only a reconnection received after the erasure restarts it
    assert [added["action"], same_moment["action"]] == ["skipped_purged", "skipped_purged"]
    assert stored(world, ACCOUNT) == [] and world.state.accounts[ACCOUNT]["status"] == "purged"
    restarted = world.deliver(fully_synced(ACCOUNT), received_at_ms=erased_at + 1)
    assert restarted["action"] == "synced" and len(stored(world, ACCOUNT)) == 15


def test_argyle_reporting_the_account_connected_again_starts_it_afresh():
    world = World()
    world.synced(ACCOUNT, 10)
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body())
    # When the worker connects the account again and Argyle syncs it (received after the removal)
    world.argyle.revoked.discard(ACCOUNT)
    world.argyle.add(ACCOUNT, 7)
    outcome = world.deliver(fully_synced(ACCOUNT))
    # Then its activities are stored again and its state is an ordinary one
    assert outcome["action"] == "synced" and len(stored(world, ACCOUNT)) == 7
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_accounts_connected_after_the_removal_lets_the_accounts_later_webhooks_write_again():
    # Given a purged account
    world = World()
    world.synced(ACCOUNT, 10)
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body())
    # When the worker connects it again: accounts.connected first, then its activities arrive
    world.argyle.revoked.discard(ACCOUNT)
    world.argyle.accounts[ACCOUNT] = {}  # Argyle answers for the account again, with no activities yet
    connected = world.deliver(webhook_body("accounts.connected", account=ACCOUNT, user=USER))
    new = world.argyle.add(ACCOUNT, 4, first=100)
    added = world.deliver(webhook_body("activities.added", account=ACCOUNT, user=USER, added_from=None,
                                       added_to=None))
    # Then the account is no longer treated as purged: the connection is recorded, the activities stored
    assert connected["connection_status"] == "connected" and world.state.purge_marker(ACCOUNT) is None
    assert added["action"] != "skipped_purged"
    assert sorted(key[1] for key in stored(world, ACCOUNT)) == sorted(doc["id"] for doc in new)


def test_a_large_account_purges_across_messages_in_its_group():
    world = World()
    world.synced(ACCOUNT, 2_500)
    world.argyle.revoke(ACCOUNT)
    first = world.deliver(removed_body(), remaining_ms=1)
    assert first["action"] == "continued" and world.queue.sent[0].group_id == f"account:{ACCOUNT}"
    assert world.state.accounts[ACCOUNT]["status"] == "purging"
    # Meanwhile, a webhook of the account queued behind the purge writes nothing
    rest = world.drain(remaining_ms=1)
    assert rest[-1]["action"] == "purged" and rest[-1]["purged"]["activities"] == 2_500
    assert stored(world, ACCOUNT) == [] and world.state.accounts[ACCOUNT]["status"] == "purged"


def test_the_users_profile_stays_while_the_user_has_another_account():
    world = World()
    world.synced(ACCOUNT, 5)
    world.synced(OTHER, 5)
    world.argyle.revoke(ACCOUNT)
    first = world.deliver(removed_body(ACCOUNT))
    assert "user_profiles" not in first["purged"] and USER in world.state.users
    assert len(stored(world, OTHER)) == 5
    world.argyle.revoke(OTHER)
    second = world.deliver(removed_body(OTHER), account=OTHER)
    assert second["purged"]["user_profiles"] == 1 and world.state.users == {}


def test_an_erasure_request_purges_without_asking_argyle():
    # An operator's data-subject request: the account may still be connected at Argyle
    world = World()
    world.synced(ACCOUNT, 12)
    calls = world.argyle.calls
    job = PurgeJob(account=ACCOUNT, user=USER, request_id="erasure-0001", reason="erasure",
                   removed_received_at_ms=world.clock_ms + 1)
    outcome = world.deliver(job.body())
    assert outcome["purged"]["activities"] == 12 and world.argyle.calls == calls
    assert world.state.accounts[ACCOUNT]["purge_reason"] == "erasure"


def test_a_revocation_whose_webhook_never_came_is_found_by_the_reconciler_and_purged():
    # Given a synced account whose worker revoked access, and an accounts.removed that never arrived
    world = World()
    world.synced(ACCOUNT, 40)
    world.argyle.revoke(ACCOUNT)
    # When the daily reconcile compares the account with Argyle (which now has nothing for it)
    outcome = world.deliver(ReconcileJob(account=ACCOUNT, user=USER, request_id="scheduled-1", scope="counts").body())
    # Then it asks Argyle for the account itself, and on its 404 queues the purge the webhook would have
    assert outcome["purge_queued"] is True and stored(world, ACCOUNT) != []
    purged = world.drain()
    assert purged[-1]["action"] == "purged" and stored(world, ACCOUNT) == []
    assert world.state.accounts[ACCOUNT]["status"] == "purged"


def test_a_revocation_whose_webhook_never_came_is_found_by_the_weekly_full_pass_and_purged():
    # Given a synced account whose worker revoked access, and an accounts.removed that never arrived
    world = World()
    world.synced(ACCOUNT, 40)
    world.argyle.revoke(ACCOUNT)
    # When the weekly full pass lists the account (and Argyle lists nothing for it: the only way a
    # v2 stack, whose every reconcile is a full pass, can find the revocation)
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="scheduled-full-1", scope="full")
    outcome = world.deliver(job.body())
    # Then it asks Argyle for the account itself rather than for each activity, and on its 404
    # queues the purge the webhook would have
    assert outcome["purge_queued"] is True and world.argyle.get_requests == []
    purged = world.drain()
    assert purged[-1]["action"] == "purged" and stored(world, ACCOUNT) == []
    assert world.state.accounts[ACCOUNT]["status"] == "purged"


def test_an_account_argyle_has_emptied_but_not_removed_is_only_reconciled():
    world = World()
    docs = world.synced(ACCOUNT, 5)
    for doc in docs:
        world.argyle.remove(ACCOUNT, doc["id"])
    outcome = world.deliver(ReconcileJob(account=ACCOUNT, user=USER, request_id="scheduled-1", scope="counts").body())
    assert outcome["purge_queued"] is False and outcome["drift"]["extra"] == 5
    assert world.state.purge_marker(ACCOUNT) is None


def test_a_purge_that_fails_part_way_resumes_when_its_message_is_retried():
    # Given a purge whose delete step fails once (DynamoDB throttling that outlasted the retries)
    world = World()
    world.synced(ACCOUNT, 30)
    world.argyle.revoke(ACCOUNT)
    real = world.activities.delete_many
    calls = [0]

    def failing_once(account_id: str, ids: Any) -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("throttled")
        return real(account_id, ids)

    world.activities.delete_many = failing_once  # type: ignore[method-assign]
    body = removed_body()
    with pytest.raises(RuntimeError):
        world.deliver(body, received_at_ms=50_000)
    assert world.state.accounts[ACCOUNT]["status"] == "purging"
    # When SQS delivers the same message again, it is not taken for a late event of a purged account
    outcome = world.deliver(body, received_at_ms=50_000)
    assert outcome["action"] == "purged" and stored(world, ACCOUNT) == []


def test_a_reconnection_that_overtakes_a_purge_under_way_finishes_it_then_syncs_afresh():
    # Given a large account whose purge has begun (its marker set) and whose next part is queued
    world = World()
    old = world.synced(ACCOUNT, 30)
    world.argyle.revoke(ACCOUNT)
    first = world.deliver(removed_body(), remaining_ms=1)
    assert first["action"] == "continued" and world.state.accounts[ACCOUNT]["status"] == "purging"
    assert len(stored(world, ACCOUNT)) == 30
    # When the worker connects the account again and its fully_synced is processed before that part
    world.argyle.revoked.discard(ACCOUNT)
    new = world.argyle.add(ACCOUNT, 7, first=100)
    reconnected = webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=None,
                               available_to=None, available_count=7)
    outcome = world.deliver(reconnected)
    # Then the old copy is gone and only what Argyle holds now is stored, under an ordinary state
    assert outcome["action"] == "synced"
    assert sorted(key[1] for key in stored(world, ACCOUNT)) == sorted(doc["id"] for doc in new)
    assert not {doc["id"] for doc in old} & {key[1] for key in stored(world, ACCOUNT)}
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"
    # and of the old account's archive only this webhook's copy is left; the user's profile stays
    assert [entry["body"] for entry in world.state.archive.values()
            if entry["group"] == f"account:{ACCOUNT}"] == [reconnected]
    assert USER in world.state.users
    # And the purge's queued part, arriving after, deletes nothing of the new copy
    rest = world.drain()
    assert [o["action"] for o in rest] == ["skipped"]
    assert len(stored(world, ACCOUNT)) == 7 and world.state.accounts[ACCOUNT]["status"] == "fully_synced"


def failing_to_forget_once(world: World) -> None:
    """The marker's removal fails once (DynamoDB throttling that outlasted the retries)."""
    real = world.state.forget_purge
    calls = [0]

    def forget_purge(account_id: str) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("throttled")
        real(account_id)

    world.state.forget_purge = forget_purge  # type: ignore[method-assign]


def reconnect_failing_before_the_marker_goes(world: World, *, new_activities: int) -> bytes:
    """The worker connects the account again (Argyle answers for it with `new_activities`) and its
    fully_synced fails once removing the purge marker; returns that body, for the retry."""
    world.argyle.revoked.discard(ACCOUNT)
    world.argyle.add(ACCOUNT, new_activities, first=100)
    failing_to_forget_once(world)
    body = fully_synced(ACCOUNT)
    with pytest.raises(RuntimeError):
        world.deliver(body, received_at_ms=90_000)
    return body


def test_a_reconnection_that_fails_after_a_purge_finished_leaves_the_purges_marker_as_it_was():
    # Given a purged account: its marker says when, why and how much was deleted
    world = World()
    world.synced(ACCOUNT, 12)
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body())
    receipt = dict(world.state.accounts[ACCOUNT])
    assert receipt["deleted"]["activities"] == 12
    # When the worker connects the account again and its fully_synced fails before the marker goes
    body = reconnect_failing_before_the_marker_goes(world, new_activities=3)
    # Then until the retry the marker is the purge's own, unchanged (what `argyle-synced state` shows)
    assert world.state.accounts[ACCOUNT] == receipt
    # And the retry starts the account afresh
    assert world.deliver(body, received_at_ms=90_000)["action"] == "synced" and len(stored(world, ACCOUNT)) == 3


def test_a_purge_a_reconnection_finishes_is_recorded_as_a_removal_by_argyle():
    # Given an accounts.removed purge under way (its marker set, its next part queued)
    world = World()
    world.synced(ACCOUNT, 30)
    world.argyle.revoke(ACCOUNT)
    world.deliver(removed_body(), remaining_ms=1)
    removed_at = world.state.accounts[ACCOUNT]["removed_received_at_ms"]
    assert world.state.accounts[ACCOUNT]["status"] == "purging"
    # When a reconnection overtakes it, finishes it, and fails before the marker goes
    body = reconnect_failing_before_the_marker_goes(world, new_activities=4)
    # Then the marker left until the retry is a final one that says why and when: Argyle's removal
    # (not an erasure request), received when the removal was; the old activities are gone
    marker = world.state.accounts[ACCOUNT]
    assert marker["status"] == "purged" and marker["purge_reason"] == "accounts.removed"
    assert marker["removed_received_at_ms"] == removed_at
    assert stored(world, ACCOUNT) == []
    # And the retry starts the account afresh
    assert world.deliver(body, received_at_ms=90_000)["action"] == "synced" and len(stored(world, ACCOUNT)) == 4


def deliver_one_queued(world: World, remaining_ms: int) -> dict[str, Any]:
    """The next queued message (a purge's next part), processed alone."""
    message = message_from_sqs_record(record_for(world.queue.sent.pop(0)))
    return world.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()


def test_a_large_purge_deletes_at_most_a_thousand_activities_or_five_hundred_archived_bodies_a_part():
    # Given a large account: 1,500 activities and 700 archived webhooks (kept 90 days) of its own
    world = World()
    world.synced(ACCOUNT, 1_500)
    group = f"account:{ACCOUNT}"
    kept: dict[str, Any] = {"processed_at": "t", "expires_at": 10**10, "group_id": group}
    for n in range(699):  # with the fully_synced archived by the sync: 700
        world.state.archive_event(f"old-{n}", "activities.updated", b"{}", received_at_ms=n, **kept)
    world.argyle.revoke(ACCOUNT)
    # When it is purged by messages that each have time for only one step
    outcomes = [world.deliver(removed_body(), remaining_ms=1)]
    left = []
    while world.queue.sent:
        outcomes.append(deliver_one_queued(world, remaining_ms=1))
        archived = sum(entry["group"] == group for entry in world.state.archive.values())
        left.append((len(stored(world, ACCOUNT)), archived))
    # Then each part deleted one bounded batch: 1,000 activities, then 500 archived bodies, at most
    # (what is left after each part: activities, archived bodies)
    assert left[:5] == [(500, 700), (0, 700), (0, 700), (0, 200), (0, 0)]
    assert outcomes[-1]["action"] == "purged"
    assert outcomes[-1]["purged"] == {"activities": 1_500, "archived_events": 701, "user_profiles": 1}


def test_the_parts_of_a_long_purge_are_numbered_one_after_another():
    world = World()
    world.synced(ACCOUNT, 30)
    world.argyle.revoke(ACCOUNT)
    first = world.deliver(removed_body(), remaining_ms=1)
    rest = world.drain(remaining_ms=1)
    parts = [(o["part"], o["continuation_part"]) for o in [first, *rest]]
    assert len(parts) > 3 and parts == [(n, n + 1) for n in range(len(parts) - 1)] + [(len(parts) - 1, None)]


def test_a_purge_with_exactly_the_margin_left_is_finished_in_the_same_message():
    # Given a purge that starts with exactly the time the sync keeps in reserve for handing work on
    world = World()
    world.synced(ACCOUNT, 30)
    world.argyle.revoke(ACCOUNT)
    margin = world.sync.ctx.options.continuation_margin_ms
    # When it runs
    outcome = world.deliver(removed_body(), remaining_ms=margin)
    # Then it is not short of time: it finishes in this message, nothing is queued
    assert outcome["action"] == "purged" and world.queue.sent == []
    assert stored(world, ACCOUNT) == []


def test_the_users_archived_webhooks_are_counted_exactly_when_the_accounts_own_have_expired():
    # Given a purged account's archive already expired (kept 90 days), its user's profile webhook not
    world = World()
    world.synced(ACCOUNT, 5)
    for key in [k for k, entry in world.state.archive.items() if entry["group"] == f"account:{ACCOUNT}"]:
        del world.state.archive[key]
    world.argyle.revoke(ACCOUNT)
    # When the account is removed
    outcome = world.deliver(removed_body())
    # Then the receipt counts the one archived body deleted: the user's
    assert outcome["purged"] == {"activities": 5, "archived_events": 1, "user_profiles": 1}
    assert world.state.accounts[ACCOUNT]["deleted"]["archived_events"] == 1


def test_a_purge_message_that_came_without_a_message_group_continues_in_the_accounts_group():
    # Given an erasure request delivered without a message group (sent by hand, outside the FIFO queue)
    world = World()
    world.synced(ACCOUNT, 30)
    now = world.clock_ms + 1
    job = PurgeJob(account=ACCOUNT, user=USER, request_id="erasure-0003", reason="erasure", removed_received_at_ms=now)
    message = SyncMessage(body=job.body(), group_id="", correlation_id="corr", received_at_ms=now)
    # When it runs out of time after its first step
    outcome = world.sync.process(message, parse_message(message), lambda: 1).as_dict()
    # Then its next part is queued in the account's group, in order with the account's webhooks
    assert outcome["action"] == "continued"
    assert [sent.group_id for sent in world.queue.sent] == [f"account:{ACCOUNT}"]


def test_a_purge_recorded_as_removed_at_time_zero_still_runs_all_its_parts():
    # Given an erasure request whose removal time is 0 (the earliest a request may carry)
    world = World()
    world.synced(ACCOUNT, 30)
    job = PurgeJob(account=ACCOUNT, user=USER, request_id="erasure-0004", reason="erasure", removed_received_at_ms=0)
    # When it runs across several messages
    first = world.deliver(job.body(), remaining_ms=1)
    rest = world.drain(remaining_ms=1)
    # Then its later parts know the purge as their own and finish it
    assert first["action"] == "continued" and rest[-1]["action"] == "purged"
    assert "skipped" not in [o["action"] for o in rest]
    assert stored(world, ACCOUNT) == [] and world.state.accounts[ACCOUNT]["status"] == "purged"
