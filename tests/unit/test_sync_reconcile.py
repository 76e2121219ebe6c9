"""Drift the webhooks cannot fix, found and repaired: listings that Argyle changes under them,
removals that Argyle contradicts, and webhooks that never arrive (an in-memory Argyle that pages
by offset, as v1 does, and the stores' in-memory twins)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from argyle_pipeline.argyle.client import ArgyleUnavailable
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.messages import (
    CHANGES_EVENT,
    PURGE_EVENT,
    ReconcileJob,
    ResyncRequest,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from argyle_pipeline.timestamps import EARLIEST, LATEST
from tests.support.fake_argyle import BASE_TIME, FakeArgyle, unavailable, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9


class World:
    def __init__(self, changes_per_part: int = 500, margin_ms: int = 120_000) -> None:
        self.argyle = FakeArgyle(page_limit=200)
        self.activities, self.state, self.queue = MemoryActivities(), MemoryState(), MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue,
                                 SyncOptions(changes_per_part=changes_per_part, continuation_margin_ms=margin_ms),
                                 clock=lambda: (BASE_TIME + timedelta(days=400)).timestamp())

    def deliver(self, body: bytes, remaining_ms: int | Callable[[], int] = PLENTY) -> dict[str, Any]:
        message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="corr", received_at_ms=1)
        left = remaining_ms if callable(remaining_ms) else lambda: remaining_ms
        return self.sync.process(message, parse_message(message), left).as_dict()

    def drain(self, remaining_ms: int = PLENTY) -> list[dict[str, Any]]:
        outcomes = []
        while self.queue.sent:
            event = self.queue.sent.pop(0)
            message = message_from_sqs_record(record_for(event))
            outcomes.append(self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict())
        return outcomes

    def deliver_next(self, remaining_ms: int = PLENTY) -> dict[str, Any]:
        message = message_from_sqs_record(record_for(self.queue.sent.pop(0)))
        return self.sync.process(message, parse_message(message), lambda: remaining_ms).as_dict()

    def synced(self, n: int) -> list[dict[str, Any]]:
        docs = self.argyle.add(ACCOUNT, n)
        self.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=None,
                                  available_to=None, available_count=n))
        assert self.activities.live(ACCOUNT) == self.argyle.truth(ACCOUNT)
        return docs

    def reconcile(self, scope: str = "counts", request_id: str = "reconcile-0001",
                  remaining_ms: int | Callable[[], int] = PLENTY, **kw: Any) -> dict[str, Any]:
        job = ReconcileJob(account=ACCOUNT, user=USER, request_id=request_id, scope=scope, **kw)
        return self.deliver(job.body(), remaining_ms=remaining_ms)

    def exact(self) -> bool:
        return self.activities.live(ACCOUNT) == self.argyle.truth(ACCOUNT)


def _removed_body(ids: list[str]) -> bytes:
    return webhook_body("activities.removed", account=ACCOUNT, user=USER, removed_count=len(ids),
                        available_from=None, available_to=None, available_count=0, removed_activities=ids)


# --- confirmed removals --------------------------------------------------------------------------

def test_a_removal_that_argyle_contradicts_removes_nothing_and_is_counted():
    # Given a synced account, and a validly signed activities.removed naming 10 activities that
    # Argyle still has (a leaked secret, or a mistaken event)
    world = World()
    docs = world.synced(30)
    named = [d["id"] for d in docs[:10]]
    # When it is processed
    outcome = world.deliver(_removed_body(named))
    # Then Argyle was asked about each, nothing was removed, and the 10 are counted as contradicted
    assert sorted(world.argyle.get_requests) == sorted(named)
    assert outcome["removed"] == 0 and outcome["contradicted"] == 10
    assert world.activities.remove_calls == []
    assert world.exact()


def test_a_removal_naming_more_ids_than_one_part_checks_continues_in_messages_of_its_own():
    # Given 1,200 activities, all removed at Argyle, and an invocation that checks 500 ids
    world = World(changes_per_part=500)
    docs = world.synced(1200)
    ids = [d["id"] for d in docs]
    for activity_id in ids:
        world.argyle.remove(ACCOUNT, activity_id)
    # When activities.removed names all of them
    first = world.deliver(_removed_body(ids))
    # Then the first part checked 500 and queued the rest as two parts in the account's group
    assert first["removed"] == 500 and first["changes_parts"] == 2
    assert [e.event_name for e in world.queue.sent] == [CHANGES_EVENT, CHANGES_EVENT]
    assert {e.group_id for e in world.queue.sent} == {f"account:{ACCOUNT}"}
    # And once they are processed every one is gone, each id asked about exactly once
    rest = world.drain()
    assert [o["removed"] for o in rest] == [500, 200]
    assert sorted(world.argyle.get_requests) == sorted(ids)
    assert world.activities.live(ACCOUNT) == {} and world.exact()


# --- listings under change -----------------------------------------------------------------------

def test_a_listing_that_argyle_changes_between_pages_is_verified_and_ends_exact():
    # Given 1,000 activities at Argyle (offset pages of 200), and a scan that removes the two first
    # listed activities and adds an early one before each later page, with no webhook reaching us
    world = World()
    world.argyle.add(ACCOUNT, 1000)
    added: list[dict[str, Any]] = []
    removed: list[str] = []

    def scan(account: str | None) -> None:
        ordered = sorted(world.argyle.accounts[ACCOUNT].values(), key=lambda d: (d["start_date"], d["id"]))
        for doc in ordered[:2]:
            world.argyle.remove(ACCOUNT, doc["id"])
            removed.append(doc["id"])
        added.append(world.argyle.add_dated(ACCOUNT, 10_000 + len(added), BASE_TIME - timedelta(days=1 + len(added))))

    world.argyle.between_pages = scan
    # When fully_synced is processed
    outcome = world.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER,
                                         available_from=None, available_to=None, available_count=1000))
    world.argyle.between_pages = None
    # Then the listing noticed, queued a second pass instead of recording the account as synced
    assert outcome["relisted"] is True and outcome["action"] == "continued"
    assert "status" not in world.state.accounts.get(ACCOUNT, {})
    stored_but_gone = set(removed) & set(world.activities.live(ACCOUNT))
    assert stored_but_gone and not world.exact()
    # And the second pass (Argyle now still) ends with the exact copy, confirming the removed
    # ones it had stored gone before removing them, and the account recorded as synced
    second = world.drain()
    assert [o["listing_pass"] for o in second] == [2] and second[0]["removed"] == len(stored_but_gone)
    assert world.exact()
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_an_unchanged_listing_costs_no_verification():
    world = World()
    world.argyle.add(ACCOUNT, 450)
    outcome = world.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER,
                                         available_from=None, available_to=None, available_count=450))
    assert outcome["relisted"] is False and outcome["listing_pass"] == 1
    assert world.argyle.calls == 3 and world.queue.sent == []


# --- reconciliation ------------------------------------------------------------------------------

def test_an_account_without_drift_costs_two_counts():
    world = World()
    world.synced(2000)
    calls = world.argyle.calls
    outcome = world.reconcile()
    assert world.argyle.calls - calls == 2
    assert outcome["drift"] == {"missing": 0, "extra": 0, "stale": 0}
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == 2


def test_one_missed_activity_in_ten_thousand_is_found_by_bisection_in_a_few_calls():
    # Given 10,000 stored activities, and one more added at Argyle whose webhook never came
    world = World()
    docs = world.synced(10_000)
    missed = world.argyle.add_dated(ACCOUNT, 20_000, BASE_TIME + timedelta(hours=5_000, minutes=7))
    calls = world.argyle.calls
    # When the account is reconciled
    outcome = world.reconcile()
    # Then it is stored, found as missing, in at most 2*log2(N/200) + 2 calls (not 50 pages)
    used = world.argyle.calls - calls
    assert used <= 2 * math.log2(len(docs) / 200) + 2, used
    assert outcome["drift"] == {"missing": 1, "extra": 0, "stale": 0}
    assert missed["id"] in world.activities.live(ACCOUNT) and world.exact()


def test_a_missed_removal_is_found_and_the_activity_confirmed_gone_before_it_is_removed():
    world = World()
    docs = world.synced(3000)
    gone = [docs[17]["id"], docs[2500]["id"]]
    for activity_id in gone:
        world.argyle.remove(ACCOUNT, activity_id)
    outcome = world.reconcile()
    assert outcome["drift"] == {"missing": 0, "extra": 2, "stale": 0}
    assert sorted(world.argyle.get_requests) == sorted(gone)
    assert world.exact()


class CountsStopAnswering(FakeArgyle):
    """An Argyle that answers the account's first two counts (all, dated), then no count (None),
    as when its count stops being reported mid-reconcile."""

    def count_activities(self, account: str, from_start_date: str | None = None,
                         to_start_date: str | None = None) -> int | None:
        counted = super().count_activities(account, from_start_date, to_start_date)
        return counted if len(self.count_requests) <= 2 else None


def test_a_bisection_without_a_count_for_its_half_lists_the_window_and_still_repairs_the_drift():
    # Given 1,000 stored activities, one of them since removed at Argyle with no webhook, and an
    # Argyle whose counts stop answering after the reconcile's first two
    world = World()
    world.argyle = CountsStopAnswering(page_limit=200)
    world.sync.ctx.argyle, world.sync.ctx.fetchers = world.argyle, [world.argyle]
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[600]["id"])
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then the window it could not halve was listed instead, and the removal found and confirmed
    assert len(world.argyle.count_requests) == 3
    assert outcome["drift"] == {"missing": 0, "extra": 1, "stale": 0}
    assert world.argyle.get_requests == [docs[600]["id"]] and world.exact()


def test_with_pages_of_one_a_missed_activity_is_found_by_halving_the_time_range():
    # Given pages of one activity (ARGYLE_PAGE_LIMIT=1), one activity stored and a second one,
    # an hour later, added at Argyle with no webhook: half of Argyle's activities are not stored,
    # so the stored ones cannot say where to cut
    world = World()
    world.argyle = FakeArgyle(page_limit=1)
    world.sync = ActivitySync(world.argyle, world.activities, world.state, world.queue, SyncOptions(page_limit=1),
                              clock=lambda: (BASE_TIME + timedelta(days=400)).timestamp())
    world.synced(1)
    missed = world.argyle.add_dated(ACCOUNT, 1, BASE_TIME + timedelta(hours=1))
    calls = world.argyle.calls
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then it is repaired, each count halving the time range until the two starts part: about
    # log2(130 years / 1 hour) calls in all (the halvings, the first two counts, the window's
    # listing), never one per second
    used = world.argyle.calls - calls
    assert outcome["drift"] == {"missing": 1, "extra": 0, "stale": 0}
    assert missed["id"] in world.activities.live(ACCOUNT) and world.exact()
    assert used <= math.log2((LATEST - EARLIEST) / 3600) + 2, used


def test_fifty_scattered_missing_activities_are_repaired_for_no_more_than_a_listing():
    world = World()
    world.synced(10_000)
    for i in range(50):
        world.argyle.add_dated(ACCOUNT, 30_000 + i, BASE_TIME + timedelta(hours=200 * i, minutes=3))
    calls = world.argyle.calls
    outcome = world.reconcile()
    assert outcome["drift"]["missing"] == 50 and world.exact()
    # bisecting 50 drifted activities would cost ~50 * log2(50) counts: the window is listed instead
    assert world.argyle.calls - calls <= 10_050 // 200 + 3


def test_a_missed_update_in_the_recent_window_is_repaired_by_the_recent_pass():
    # Given a synced account whose latest activity changed at Argyle without a webhook
    world = World()
    docs = world.synced(300)
    latest = max(docs, key=lambda d: d["start_date"])
    world.argyle.update(ACCOUNT, latest["id"], tips="4.44")
    # When the daily (recent) reconcile runs with a window that covers it
    outcome = world.reconcile(scope="recent", recent_days=400)
    # Then the stored copy is Argyle's, counted as stale drift
    assert outcome["drift"]["stale"] == 1 and world.exact()


def test_a_missing_undated_activity_falls_back_to_a_full_pass():
    world = World()
    world.synced(500)
    undated = world.argyle.add_dated(ACCOUNT, 40_000, BASE_TIME)
    undated["start_date"] = None
    outcome = world.reconcile()
    assert outcome["drift"]["missing"] == 1 and world.exact()
    assert world.argyle.list_requests[-1][:3] == (ACCOUNT, None, None)


def test_a_full_pass_repairs_content_drift_anywhere_and_drift_that_counts_cannot_see():
    # Given one activity removed and one added at Argyle (the counts still agree) and an old one
    # changed, with no webhook for any of them
    world = World()
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[10]["id"])
    world.argyle.add_dated(ACCOUNT, 50_000, BASE_TIME + timedelta(hours=20, minutes=1))
    world.argyle.update(ACCOUNT, docs[3]["id"], tips="7.77")
    assert world.reconcile()["drift"] == {"missing": 0, "extra": 0, "stale": 0}  # counts are blind to it
    # When the weekly full pass runs
    outcome = world.reconcile(scope="full", request_id="reconcile-full-1")
    # Then all three are repaired
    assert outcome["drift"] == {"missing": 1, "extra": 1, "stale": 1} and world.exact()


def test_a_reconcile_short_of_time_continues_in_the_accounts_group_and_ends_exact():
    world = World()
    docs = world.synced(4000)
    for i in range(20):
        world.argyle.remove(ACCOUNT, docs[i * 150]["id"])
    first = world.reconcile(remaining_ms=1)
    assert first["action"] == "continued"
    assert {e.group_id for e in world.queue.sent} == {f"account:{ACCOUNT}"}
    outcomes = world.drain(remaining_ms=1)
    assert outcomes[-1]["drift"]["extra"] == 20 and world.exact()


def test_a_listing_argyle_keeps_changing_is_recorded_after_three_passes_and_counted_unstable():
    # Given an account that Argyle changes before every later page, whatever the pass
    world = World()
    world.argyle.add(ACCOUNT, 600)
    n = [0]

    def scan(account: str | None) -> None:
        n[0] += 1
        ordered = sorted(world.argyle.accounts[ACCOUNT].values(), key=lambda d: (d["start_date"], d["id"]))
        world.argyle.remove(ACCOUNT, ordered[0]["id"])

    world.argyle.between_pages = scan
    first = world.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER,
                                       available_from=None, available_to=None, available_count=600))
    rest = world.drain()
    # Then it was listed three times, no more, and recorded as synced, marked unstable
    assert first["relisted"] and [o["listing_pass"] for o in rest] == [2, 3]
    assert rest[-1]["unstable"] is True and world.queue.sent == []
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"


def _updated_body(ids: list[str]) -> bytes:
    return webhook_body("activities.updated", account=ACCOUNT, user=USER, updated_activities=ids,
                        updated_count=len(ids), available_from=None, available_to=None, available_count=0)


def test_activities_an_event_writes_between_a_second_passs_parts_are_read_again_not_removed():
    # Given a listing of 600 that Argyle changes under its first pass (one removal before each later page)
    world = World()
    world.argyle.add(ACCOUNT, 600)

    def scan(account: str | None) -> None:
        ordered = sorted(world.argyle.accounts[ACCOUNT].values(), key=lambda d: (d["start_date"], d["id"]))
        world.argyle.remove(ACCOUNT, ordered[0]["id"])

    world.argyle.between_pages = scan
    assert world.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=None,
                                      available_to=None, available_count=600))["relisted"]
    world.argyle.between_pages = None
    # And its second pass short of time after its first page, then an activities.updated for two
    # activities of that page written before the pass goes on
    first_part = world.deliver_next(remaining_ms=1)
    assert first_part["listing_pass"] == 2 and first_part["action"] == "continued"
    ordered = sorted(world.argyle.accounts[ACCOUNT].values(), key=lambda d: (d["start_date"], d["id"]))
    touched = [ordered[0]["id"], ordered[1]["id"]]
    _updated_then_changed_again(world, touched)
    # When the rest of the pass is processed
    rest = world.drain()
    # Then its sweep read the two again (their writes carried no pass mark), kept them at their
    # newest and counts them, while removing the two that Argyle removed during the first pass
    assert rest[-1]["listing_pass"] == 2 and rest[-1]["completed"]
    assert rest[-1]["fetched"] == 2 and rest[-1]["removed"] == 2
    assert world.exact() and set(touched) <= set(world.activities.live(ACCOUNT))


def _updated_then_changed_again(world: World, touched: list[str]) -> None:
    """The activities change at Argyle, their activities.updated is processed, and they change
    once more (that webhook not here yet)."""
    for activity_id in touched:
        world.argyle.update(ACCOUNT, activity_id, tips="4.44")
    world.deliver(_updated_body(touched))
    for activity_id in touched:
        world.argyle.update(ACCOUNT, activity_id, tips="5.55")


def test_a_resync_reads_again_what_an_event_wrote_between_its_parts_and_removes_what_argyle_lost():
    # Given 600 synced activities, one of them since removed at Argyle with no webhook
    world = World()
    docs = world.synced(600)
    ordered = sorted(docs, key=lambda d: (d["start_date"], d["id"]))
    world.argyle.remove(ACCOUNT, ordered[-1]["id"])
    # And a re-sync short of time after its first page, then an activities.updated for two
    # activities of that page, which change at Argyle once more before the re-sync goes on
    first = world.deliver(ResyncRequest(account=ACCOUNT, user=USER, request_id="resync-0002").body(), remaining_ms=1)
    assert first["action"] == "continued" and first["pages"] == 1
    touched = [ordered[0]["id"], ordered[1]["id"]]
    _updated_then_changed_again(world, touched)
    # When the rest of the re-sync is processed
    rest = world.drain()
    # Then it read the two again and kept them at their newest, counted, and removed only the lost one
    assert rest[-1]["completed"] and rest[-1]["fetched"] == 2 and rest[-1]["removed"] == 1
    assert world.state.accounts[ACCOUNT]["resync_removed"] == 1
    assert world.exact()


def test_a_resync_too_large_for_one_invocation_is_numbered_from_part_0_as_every_listing_is():
    # Given 500 synced activities (three pages of 200)
    world = World()
    world.synced(500)
    # When a re-sync runs short of time after every page
    first = world.deliver(ResyncRequest(account=ACCOUNT, user=USER, request_id="resync-0003").body(), remaining_ms=1)
    rest = world.drain(remaining_ms=1)
    # Then the request itself is reported as part 0 handing on part 1, and its continuations as
    # parts 1 and 2, the last one completing it
    assert (first["part"], first["continuation_part"]) == (0, 1)
    assert [(o["part"], o["continuation_part"]) for o in rest] == [(1, 2), (2, None)]
    assert rest[-1]["completed"] and world.exact()


def test_a_ranged_listing_sweeps_only_its_own_range_on_the_second_pass():
    # Given 600 activities stored, and an activities.added over the newest 300 during whose listing
    # Argyle removes two of them; one old activity is also gone at Argyle without a webhook
    world = World()
    docs = world.synced(600)
    ordered = sorted(docs, key=lambda d: d["start_date"])
    old_gone = ordered[0]["id"]
    world.argyle.remove(ACCOUNT, old_gone)
    window = ordered[300:]
    removed: list[str] = []

    def scan(account: str | None) -> None:
        if not removed:
            for doc in window[:2]:
                world.argyle.remove(ACCOUNT, doc["id"])
                removed.append(doc["id"])

    world.argyle.between_pages = scan
    world.deliver(webhook_body("activities.added", account=ACCOUNT, user=USER, added_count=0,
                               added_from=window[0]["start_date"], added_to=window[-1]["start_date"],
                               available_from=None, available_to=None, available_count=597))
    world.argyle.between_pages = None
    second = world.drain()
    # Then the second pass removed the two from its range, after Argyle confirmed them gone, and
    # left the old one (outside the range) to a reconcile
    assert second[0]["listing_pass"] == 2 and second[0]["removed"] == 2
    assert sorted(world.argyle.get_requests) == sorted(removed)
    assert old_gone in world.activities.live(ACCOUNT)


def _added_with_a_change_under_its_first_pass(world: World, added_from: str | None, added_to: str | None,
                                              removed_at_argyle: list[str]) -> list[dict[str, Any]]:
    """An activities.added over [added_from, added_to] during whose first pass Argyle removes the
    given activities (before its second page); its second pass, undisturbed, then runs to the end."""
    removed: list[str] = []

    def scan(account: str | None) -> None:
        if not removed:
            for activity_id in removed_at_argyle:
                world.argyle.remove(ACCOUNT, activity_id)
                removed.append(activity_id)

    world.argyle.between_pages = scan
    first = world.deliver(webhook_body("activities.added", account=ACCOUNT, user=USER, added_count=0,
                                       added_from=added_from, added_to=added_to, available_from=None,
                                       available_to=None, available_count=None))
    world.argyle.between_pages = None
    assert first["relisted"] and removed == removed_at_argyle
    return world.drain()


def test_a_ranged_second_pass_sweeps_the_activities_at_both_bounds_and_none_beyond_them():
    # Given 600 stored activities, one an hour, of which one before and one after the range
    # [#100, #499] are gone at Argyle with no webhook
    world = World()
    ordered = sorted(world.synced(600), key=lambda d: d["start_date"])
    outside = [ordered[50]["id"], ordered[550]["id"]]
    for activity_id in outside:
        world.argyle.remove(ACCOUNT, activity_id)
    # When an activities.added over exactly that range is listed, and Argyle removes the two
    # activities that start at its bounds during the first pass
    at_bounds = [ordered[100]["id"], ordered[499]["id"]]
    second = _added_with_a_change_under_its_first_pass(world, ordered[100]["start_date"],
                                                       ordered[499]["start_date"], at_bounds)
    # Then the second pass asked Argyle about exactly the two at the bounds, removed and counted
    # them, and left the two outside the range to a reconcile
    assert [o["listing_pass"] for o in second] == [2] and second[0]["completed"]
    assert sorted(world.argyle.get_requests) == sorted(at_bounds)
    assert second[0]["removed"] == 2
    live = world.activities.live(ACCOUNT)
    assert not set(at_bounds) & set(live) and set(outside) <= set(live)


@pytest.mark.parametrize("open_end", ["from", "to"])
def test_a_second_pass_of_a_range_open_at_one_end_sweeps_only_that_side(open_end: str):
    # Given 600 stored activities, one an hour; the range is #300 onwards (or up to #299), and an
    # activity on the other side of it is gone at Argyle with no webhook
    world = World()
    ordered = sorted(world.synced(600), key=lambda d: d["start_date"])
    if open_end == "to":
        added_from, added_to = ordered[300]["start_date"], None
        inside, outside = ordered[300:], ordered[:300]
    else:
        added_from, added_to = None, ordered[299]["start_date"]
        inside, outside = ordered[:300], ordered[300:]
    other_side_gone = outside[len(outside) // 2]["id"]
    world.argyle.remove(ACCOUNT, other_side_gone)
    # When an activities.added over that range is listed, and Argyle removes one of its
    # activities during the first pass
    in_range_gone = [inside[len(inside) // 2]["id"]]
    second = _added_with_a_change_under_its_first_pass(world, added_from, added_to, in_range_gone)
    # Then the second pass asked Argyle about that one only, removed it, and left the one on the
    # other side of the range to a reconcile
    assert [o["listing_pass"] for o in second] == [2] and second[0]["completed"]
    assert world.argyle.get_requests == in_range_gone
    assert second[0]["removed"] == 1
    live = world.activities.live(ACCOUNT)
    assert in_range_gone[0] not in live and other_side_gone in live


def argyle_unavailable_at(world: World, *calls_from_now: int) -> int:
    """Argyle answers unavailable (its retries exhausted) to these calls, counted from now (0 is the
    next one); returns how many calls it had answered before."""
    original_call = world.argyle._call
    calls_at_start = world.argyle.calls

    def call() -> None:
        if world.argyle.calls - calls_at_start in calls_from_now:
            world.argyle.fail_next = [unavailable()]
        original_call()

    world.argyle._call = call  # type: ignore[method-assign]
    return calls_at_start


def test_argyle_giving_out_mid_way_through_a_full_pass_hands_it_on_from_its_cursor():
    # Given a synced account of 1,000 (5 pages), drift Argyle's counts cannot see, and Argyle
    # unavailable (retries exhausted) for the full pass's fourth page
    world = World()
    docs = world.synced(1000)
    world.argyle.update(ACCOUNT, docs[900]["id"], tips="1.23")
    world.argyle.list_requests.clear()
    calls_at_start = argyle_unavailable_at(world, 3)
    # When the weekly full pass runs
    first = world.reconcile(scope="full", request_id="reconcile-full-2")
    # Then it succeeded as "continued" after three pages, its continuation carrying page 4's cursor
    assert first["action"] == "continued" and first["argyle_gave_out"] and first["pages"] == 3
    (queued,) = world.queue.sent
    job = parse_message(message_from_sqs_record(record_for(queued))).data
    assert isinstance(job, ReconcileJob) and job.stage == "full" and job.cursor == {"offset": "600"}
    # When the continuation runs (Argyle is back)
    outcomes = world.drain()
    # Then the pass went on from page 4 (page 1 was never listed again) and repaired the drift
    assert [r[3] for r in world.argyle.list_requests] == [None, {"offset": "200"}, {"offset": "400"},
                                                          {"offset": "600"}, {"offset": "600"}, {"offset": "800"}]
    assert outcomes[-1]["drift"] == {"missing": 0, "extra": 0, "stale": 1} and world.exact()
    # And the reconcile's recorded cost counts the calls of both invocations, the failed one's included
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == world.argyle.calls - calls_at_start


def test_a_full_pass_argyle_gives_out_on_twice_records_every_call_it_cost():
    # Given a synced account of 1,000 (5 pages) and Argyle unavailable for the full pass's fourth
    # page, and again for its fifth once the continuation has listed the fourth
    world = World()
    world.synced(1000)
    calls_at_start = argyle_unavailable_at(world, 3, 5)
    # When the full pass runs, and its continuations after it
    first = world.reconcile(scope="full", request_id="reconcile-full-4")
    outcomes = world.drain()
    # Then it was handed on twice and ended exact, and its recorded cost is every call of the
    # three invocations (the two that Argyle failed included)
    assert first["argyle_gave_out"] and outcomes[0]["argyle_gave_out"] and world.exact()
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == world.argyle.calls - calls_at_start


def test_argyle_unavailable_before_a_reconcile_asked_anything_fails_the_record():
    world = World()
    world.synced(10)
    world.argyle.fail_next = [unavailable()]
    with pytest.raises(ArgyleUnavailable):
        world.reconcile(scope="full", request_id="reconcile-full-3")
    assert world.queue.sent == []


# --- reconciles across invocations ---------------------------------------------------------------

def test_a_reconcile_left_exactly_its_margin_of_time_finishes_in_the_same_invocation():
    # Given a margin of 120 s before the invocation's end, and drift that takes several steps (a
    # count, then halvings) to find
    world = World(margin_ms=120_000)
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[734]["id"])
    # When a reconcile runs with exactly the margin left at every step
    outcome = world.reconcile(remaining_ms=120_000)
    # Then it is not short of time: it finishes here, repaired, and queues no continuation
    assert outcome["action"] != "continued" and outcome["completed"]
    assert outcome["drift"] == {"missing": 0, "extra": 1, "stale": 0} and world.exact()
    assert world.queue.sent == []


def test_a_reconcile_spread_over_many_invocations_records_the_calls_of_all_of_them():
    # Given a synced account with a missed removal, and invocations short of time after each step
    world = World()
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[900]["id"])
    calls_at_start = world.argyle.calls
    # When the reconcile runs, a step per invocation
    first = world.reconcile(remaining_ms=1)
    rest = world.drain(remaining_ms=1)
    # Then it took several parts, and its recorded cost is every call that each of them made
    assert first["action"] == "continued" and len(rest) >= 3 and rest[-1]["completed"] and world.exact()
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == world.argyle.calls - calls_at_start


def test_a_reconcile_too_large_for_one_invocation_is_numbered_in_parts_one_after_another():
    # Given a synced account with a missed removal, and invocations short of time after each step
    world = World()
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[42]["id"])
    # When the reconcile runs, a step per invocation
    first = world.reconcile(remaining_ms=1)
    rest = world.drain(remaining_ms=1)
    # Then the request is part 0 handing on part 1, and each continuation hands on the next number,
    # the last one completing the reconcile
    parts = [(first["part"], first["continuation_part"])] + [(o["part"], o["continuation_part"]) for o in rest]
    assert parts == [(n, n + 1) for n in range(len(rest))] + [(len(rest), None)]
    assert rest[-1]["completed"] and world.exact()


def test_a_reconcile_message_that_came_without_a_message_group_continues_in_the_accounts_group():
    # Given a synced account with a missed removal, and a reconcile request delivered without a
    # message group (sent by hand, outside the FIFO queue)
    world = World()
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[7]["id"])
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="reconcile-by-hand", scope="counts")
    message = SyncMessage(body=job.body(), group_id="", correlation_id="corr", received_at_ms=1)
    # When it runs out of time after its first step
    outcome = world.sync.process(message, parse_message(message), lambda: 1).as_dict()
    # Then its next part is queued in the account's group, in order with the account's webhooks
    assert outcome["action"] == "continued"
    assert [sent.group_id for sent in world.queue.sent] == [f"account:{ACCOUNT}"]
    # And the rest of it, run from there, repairs the account
    assert world.drain()[-1]["drift"] == {"missing": 0, "extra": 1, "stale": 0} and world.exact()


# --- what each pass covers, and what it asks of Argyle ------------------------------------------


def test_the_recent_pass_re_lists_exactly_its_last_days_and_nothing_older():
    # Given two activities changed at Argyle with no webhook: one that started exactly a day
    # before now, one that started a second earlier
    world = World()
    now = BASE_TIME + timedelta(days=400)
    inside = world.argyle.add_dated(ACCOUNT, 60_000, now - timedelta(days=1))
    outside = world.argyle.add_dated(ACCOUNT, 60_001, now - timedelta(days=1, seconds=1))
    world.synced(10)
    for doc in (inside, outside):
        world.argyle.update(ACCOUNT, doc["id"], tips="6.66")
    # When the daily reconcile re-lists the last day
    outcome = world.reconcile(scope="recent", recent_days=1)
    # Then the one at the window's first second was repaired, and the older one left as stored
    live, truth = world.activities.live(ACCOUNT), world.argyle.truth(ACCOUNT)
    assert outcome["drift"] == {"missing": 0, "extra": 0, "stale": 1}
    assert live[inside["id"]] == truth[inside["id"]] and live[outside["id"]] != truth[outside["id"]]


def test_a_full_pass_asks_argyle_again_only_about_what_its_listing_did_not_return():
    # Given 1,000 synced activities (5 pages), one of them since removed at Argyle with no webhook
    world = World()
    docs = world.synced(1000)
    world.argyle.remove(ACCOUNT, docs[321]["id"])
    world.argyle.get_requests.clear()
    calls = world.argyle.calls
    # When the weekly full pass runs
    outcome = world.reconcile(scope="full", request_id="reconcile-full-5")
    # Then it cost its 5 pages and one GET for the activity it did not list: no GET for any activity
    # it listed, and no lookup of the account (it listed activities: the account is there)
    assert world.argyle.get_requests == [docs[321]["id"]]
    assert world.argyle.calls - calls == 5 + 1
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == 5 + 1
    assert outcome["drift"] == {"missing": 0, "extra": 1, "stale": 0} and world.exact()


def test_a_full_pass_whose_last_page_comes_back_empty_does_not_ask_whether_the_account_still_exists():
    # Given 400 synced activities (two pages of 200), and Argyle removing the 200 not listed yet
    # just before the full pass's second page, which then comes back empty
    world = World()
    ordered = sorted(world.synced(400), key=lambda d: (d["start_date"], d["id"]))
    later = [d["id"] for d in ordered[200:]]

    def scan(account: str | None) -> None:
        for activity_id in later:
            world.argyle.accounts[ACCOUNT].pop(activity_id, None)

    world.argyle.between_pages = scan
    world.argyle.get_requests.clear()
    calls = world.argyle.calls
    # When the weekly full pass runs
    outcome = world.reconcile(scope="full", request_id="reconcile-full-6")
    # Then it cost its two pages and one GET for each activity it did not list, and no lookup of
    # the account (its first page listed activities), and it removed the 200 with no purge
    assert outcome["pages"] == 2 and sorted(world.argyle.get_requests) == sorted(later)
    assert world.argyle.calls - calls == 2 + 200
    assert outcome["drift"]["extra"] == 200 and outcome["purge_queued"] is False and world.exact()


def test_the_stored_count_a_reconcile_records_includes_the_undated_activities():
    # Given an account of 12 dated activities and an undated one, all synced, and one dated
    # activity since removed at Argyle with no webhook
    world = World()
    undated = world.argyle.add_dated(ACCOUNT, 40_000, BASE_TIME)
    undated["start_date"] = None
    docs = world.synced(12)
    assert undated["id"] in world.activities.live(ACCOUNT)
    world.argyle.remove(ACCOUNT, docs[4]["id"])
    # When it is reconciled by counts
    outcome = world.reconcile()
    # Then the counts it records agree: 13 stored before (the undated one included), 1 removed:
    # 12, as Argyle counts
    assert outcome["drift"] == {"missing": 0, "extra": 1, "stale": 0} and world.exact()
    assert outcome["counts"] == {"argyle_count": 12, "stored_live": 12}
    assert world.state.accounts[ACCOUNT]["last_counts"]["stored_live"] == 12


# --- what a reconcile costs ------------------------------------------------------------------------

def _world_with_page_limit(page_limit: int) -> World:
    world = World()
    world.argyle = FakeArgyle(page_limit=page_limit)
    world.sync = ActivitySync(world.argyle, world.activities, world.state, world.queue,
                              SyncOptions(page_limit=page_limit),
                              clock=lambda: (BASE_TIME + timedelta(days=400)).timestamp())
    return world


def _synced_at(world: World, starts: list[Any]) -> None:
    """Activities that start at the given times, stored by a fully_synced listing."""
    for n, start in enumerate(starts):
        world.argyle.add_dated(ACCOUNT, n, start)
    world.deliver(webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=None,
                               available_to=None, available_count=len(starts)))
    assert world.exact()


def test_a_missed_newest_activity_in_an_account_of_two_pages_costs_one_count_of_the_older_half_and_one_page():
    # Given 399 stored activities, one an hour, and a newer one whose activities.added never came
    # (400 at Argyle: two pages)
    world = World()
    world.synced(399)
    newest = world.argyle.add_dated(ACCOUNT, 1_000, BASE_TIME + timedelta(hours=500))
    calls = world.argyle.calls
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then 4 calls: the two counts, a count of the older half (its 200 agree), and one page of the
    # newer half, where the missed one is (the older half is neither listed nor written again)
    assert world.argyle.calls - calls == 4 and outcome["pages"] == 1
    assert outcome["drift"] == {"missing": 1, "extra": 0, "stale": 0}
    assert newest["id"] in world.activities.live(ACCOUNT) and world.exact()


def test_one_missed_activity_costs_the_same_number_of_calls_wherever_it_falls():
    # Given pages of 10 and 640 stored activities, one an hour
    world = _world_with_page_limit(10)
    world.synced(640)
    costs = []
    # When, one after another, an activity is missed at 20 places across the account and reconciled
    for k, hour in enumerate(range(-1, 640, 32)):
        world.argyle.add_dated(ACCOUNT, 90_000 + k, BASE_TIME + timedelta(hours=hour, minutes=30))
        calls = world.argyle.calls
        outcome = world.reconcile(request_id=f"reconcile-{k:04d}")
        assert outcome["drift"]["missing"] == 1 and world.exact()
        costs.append(world.argyle.calls - calls)
    # Then each cost the same: the two counts, one count per halving down to a page (7), one page
    assert costs == [10] * len(costs)


@pytest.mark.parametrize("minutes", [-30, 30, 90], ids=["before-both", "between", "after-both"])
def test_with_pages_of_two_one_missed_activity_among_three_is_found_with_one_count_and_one_page(minutes: int):
    # Given pages of two (ARGYLE_PAGE_LIMIT=2), two stored activities an hour apart and a third
    # missed, before, between or after them
    world = _world_with_page_limit(2)
    _synced_at(world, [BASE_TIME, BASE_TIME + timedelta(hours=1)])
    missed = world.argyle.add_dated(ACCOUNT, 100, BASE_TIME + timedelta(minutes=minutes))
    calls = world.argyle.calls
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then the two stored ones split the account in halves of one: the two counts, a count of the
    # first half, and the page of the half that differs; never a halving of the time range
    assert world.argyle.calls - calls == 4
    assert outcome["drift"]["missing"] == 1 and missed["id"] in world.activities.live(ACCOUNT) and world.exact()


def test_two_missed_activities_far_apart_in_an_account_of_two_pages_are_repaired_by_listing_it_outright():
    # Given 300 stored activities, and two missed ones, one older and one newer than all of them
    world = World()
    world.synced(300)
    world.argyle.add_dated(ACCOUNT, 1_000, BASE_TIME - timedelta(days=1))
    world.argyle.add_dated(ACCOUNT, 1_001, BASE_TIME + timedelta(hours=400))
    calls = world.argyle.calls
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then its two pages are listed (as many calls as halving it and listing both halves would
    # save none): 4 calls, and the outcome reports the 2 pages
    assert world.argyle.calls - calls == 4 and outcome["pages"] == 2
    assert outcome["drift"] == {"missing": 2, "extra": 0, "stale": 0} and world.exact()


def test_a_missed_activity_among_hundreds_that_start_in_the_same_second_is_repaired_by_listing_that_second():
    # Given 300 stored activities that all start in the same second (an import of old trips) and a
    # 301st of that second whose webhook never came
    world = World()
    same_second = BASE_TIME + timedelta(hours=3)
    _synced_at(world, [same_second] * 300)
    missed = world.argyle.add_dated(ACCOUNT, 1_000, same_second)
    calls = world.argyle.calls
    # When the account is reconciled by counts (the invocation ends its work after 100 calls at most)
    outcome = world.reconcile(remaining_ms=lambda: PLENTY if world.argyle.calls - calls < 100 else 0)
    # Then halvings narrow it to that second, which no count can split, and its two pages are
    # listed: 6 calls, in this one invocation
    assert outcome["completed"] and world.queue.sent == []
    assert world.argyle.calls - calls == 6
    assert missed["id"] in world.activities.live(ACCOUNT) and world.exact()


def test_a_missed_activity_one_second_after_a_stored_one_is_found():
    # Given 1,000 stored activities, one an hour, and a missed one that starts one second after the
    # 500th (the stored median: where the first halving cuts)
    world = World()
    ordered = sorted(world.synced(1000), key=lambda d: d["start_date"])
    missed = world.argyle.add_dated(ACCOUNT, 5_000, BASE_TIME + timedelta(hours=499, seconds=1))
    assert ordered[499]["start_date"] == (BASE_TIME + timedelta(hours=499)).isoformat().replace("+00:00", "Z")
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then it is stored
    assert outcome["drift"]["missing"] == 1
    assert missed["id"] in world.activities.live(ACCOUNT) and world.exact()


@pytest.mark.parametrize("scope", ["counts", "full"])
def test_a_reconcile_that_finds_the_account_revoked_leaves_its_activities_to_the_purge(scope: str):
    # Given 40 stored activities of an account whose worker revoked access (accounts.removed lost)
    world = World()
    world.synced(40)
    world.argyle.revoke(ACCOUNT)
    calls = world.argyle.calls
    # When it is reconciled
    outcome = world.reconcile(scope=scope)
    # Then a purge is queued, and Argyle was asked nothing about the stored activities one by one
    # (the purge deletes them all): the counts or the listing, and the account
    assert outcome["purge_queued"] is True and outcome["completed"]
    assert world.argyle.get_requests == [] and world.argyle.calls - calls == (3 if scope == "counts" else 2)
    assert outcome["drift"] == {"missing": 0, "extra": 0, "stale": 0}
    assert len(world.activities.live(ACCOUNT)) == 40


def test_a_reconcile_sent_without_a_message_group_queues_the_purge_of_a_revoked_account_in_the_accounts_group():
    # Given an account revoked at Argyle, and a reconcile request delivered without a message group
    world = World()
    world.synced(10)
    world.argyle.revoke(ACCOUNT)
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="reconcile-by-hand-2", scope="counts")
    message = SyncMessage(body=job.body(), group_id="", correlation_id="corr", received_at_ms=1)
    # When it runs
    outcome = world.sync.process(message, parse_message(message), lambda: PLENTY).as_dict()
    # Then the purge is queued in the account's group, in order with the account's webhooks
    assert outcome["purge_queued"] is True
    assert [(sent.event_name, sent.group_id) for sent in world.queue.sent] == [(PURGE_EVENT, f"account:{ACCOUNT}")]


def test_activities_an_event_writes_between_a_full_reconciles_parts_are_read_again_and_counted():
    # Given 600 synced activities, and a full reconcile short of time after every step
    world = World()
    docs = world.synced(600)
    ordered = sorted(docs, key=lambda d: (d["start_date"], d["id"]))
    first = world.reconcile(scope="full", request_id="reconcile-full-5", remaining_ms=1)
    second = world.deliver_next(remaining_ms=1)
    assert first["action"] == "continued" and second["pages"] == 1
    # And an activities.updated for two activities of its first page, which change at Argyle once
    # more before the reconcile goes on
    touched = [ordered[0]["id"], ordered[1]["id"]]
    _updated_then_changed_again(world, touched)
    world.argyle.get_requests.clear()
    # When the rest of the reconcile runs
    rest = world.drain()
    # Then it read the two again (their writes carried no mark of the pass), kept them at their
    # newest, and reports them as fetched
    assert rest[-1]["completed"] and rest[-1]["fetched"] == 2 and rest[-1]["removed"] == 0
    assert sorted(world.argyle.get_requests) == sorted(touched)
    assert world.exact()


# --- what a reconcile reports ----------------------------------------------------------------------

def test_a_reconcile_that_removes_activities_in_two_places_reports_every_one_it_removed():
    # Given 3,000 stored activities, two of them gone at Argyle far apart (found in different
    # windows, each removed in a batch of its own)
    world = World()
    docs = world.synced(3000)
    for activity_id in (docs[17]["id"], docs[2500]["id"]):
        world.argyle.remove(ACCOUNT, activity_id)
    # When the account is reconciled by counts
    outcome = world.reconcile()
    # Then the outcome reports both removals, not only the last batch's
    assert outcome["removed"] == 2
    assert outcome["drift"] == {"missing": 0, "extra": 2, "stale": 0} and world.exact()


def test_a_reconcile_that_repairs_missing_activities_reports_what_it_wrote():
    # Given 300 stored activities, and two missed ones, one older and one newer than all of them
    world = World()
    world.synced(300)
    world.argyle.add_dated(ACCOUNT, 1_000, BASE_TIME - timedelta(days=1))
    world.argyle.add_dated(ACCOUNT, 1_001, BASE_TIME + timedelta(hours=400))
    # When the account is reconciled by counts (its two pages are listed outright)
    outcome = world.reconcile()
    # Then the outcome reports the rows that listing wrote
    assert outcome["upserted"] == 302 and outcome["pages"] == 2
    assert outcome["drift"] == {"missing": 2, "extra": 0, "stale": 0} and world.exact()


def test_argyle_giving_out_in_the_middle_of_a_repair_hands_the_repair_on_and_the_copy_ends_exact():
    # Given 300 stored activities, two missed ones (one on each of the account's two pages), and
    # Argyle unavailable for the repair's second page, after the counts and its first page
    world = World()
    world.synced(300)
    world.argyle.add_dated(ACCOUNT, 1_000, BASE_TIME - timedelta(days=1))
    newest = world.argyle.add_dated(ACCOUNT, 1_001, BASE_TIME + timedelta(hours=400))
    argyle_unavailable_at(world, 3)
    # When the account is reconciled by counts
    first = world.reconcile()
    # Then it is handed on, with the newest missed activity not yet written
    assert first["action"] == "continued" and first["argyle_gave_out"]
    assert newest["id"] not in world.activities.live(ACCOUNT)
    # And once the continuation runs (Argyle is back) the window is listed again and the copy is exact
    rest = world.drain()
    assert rest[-1]["completed"] and world.exact()
    # And the drift recorded counts both repairs: the one written before Argyle gave out too
    assert world.state.accounts[ACCOUNT]["last_reconcile"]["drift"]["missing"] == 2
