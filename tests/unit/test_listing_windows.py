"""A large listing as disjoint start-date windows listed at once (sync/listing_windows.py): how the
range is split, when a listing is split at all (size, undated activities, API version), windows
running concurrently, several windows continued in one message on their own exact cursors, data
changing under a window, and one window's failure failing the record with no thread left."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from argyle_pipeline.argyle.api_versions import V2
from argyle_pipeline.argyle.client import ActivityPage, ArgyleUnavailable, PageLimitExceeded
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.listing_windows import list_windows, plan_windows, split_start_range, window_ranges
from argyle_pipeline.sync.messages import (
    CONTINUATION_EVENT,
    Continuation,
    ListingWindow,
    ReconcileJob,
    ResyncRequest,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from argyle_pipeline.sync.ports import UpsertResult
from tests.support.fake_argyle import BASE_TIME, FakeArgyle, iso, make_activity, range_of, unavailable, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9
WAIT_S = 10.0  # every wait's deadline: a broken window fails the test, it never hangs
WINDOWS, THRESHOLD, PAGE = 4, 100, 25


class SharedArgyle(FakeArgyle):
    """One Argyle whose counters several windows' threads update (a lock keeps them exact)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.first_page_barrier: threading.Barrier | None = None
        self.threads: set[tuple[str, int]] = set()  # (name, ident) of each thread that called
        self.first_pages = 0  # listing calls whose first page was answered
        self.first_page_answered = threading.Condition()

    def _call(self) -> None:
        with self.lock:
            self.threads.add((threading.current_thread().name, threading.get_ident()))
            super()._call()

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        barrier = self.first_page_barrier
        if barrier is not None and from_start_date is not None:
            barrier.wait(WAIT_S)  # every window's listing has begun before any page is answered
        pages = super().list_activity_pages(account, from_start_date, to_start_date, cursor)
        for taken, page in enumerate(pages, start=1):
            if taken == 1:
                with self.first_page_answered:
                    self.first_pages += 1
                    self.first_page_answered.notify_all()
            yield page

    def await_first_pages(self, listings: int) -> None:
        """Wait until `listings` listing calls have had their first page answered."""
        with self.first_page_answered:
            assert self.first_page_answered.wait_for(lambda: self.first_pages >= listings, WAIT_S)


class LockedActivities(MemoryActivities):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.fail_on_write: int | None = None  # the write (0-based, in call order) that raises

    def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult:
        with self.lock:
            if self.fail_on_write is not None and len(self.upsert_many_calls) == self.fail_on_write:
                raise RuntimeError("DynamoDB write failed")
            return super().upsert_many(activities, synced_at, resync_marker=resync_marker)


def make_sync(argyle: FakeArgyle, activities: MemoryActivities, *, windows: int = WINDOWS,
              api: Any = None) -> tuple[ActivitySync, MemoryQueue, MemoryState]:
    queue, state = MemoryQueue(), MemoryState()
    options = SyncOptions(listing_windows=windows, window_threshold=THRESHOLD, page_limit=PAGE,
                          **({"api": api} if api is not None else {}))
    return ActivitySync(argyle, activities, state, queue, options, fetchers=[argyle] * windows), queue, state


def deliver(sync: ActivitySync, body: bytes, remaining: int = PLENTY) -> dict[str, Any]:
    message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="corr", received_at_ms=1)
    return sync.process(message, parse_message(message), lambda: remaining).as_dict()


def deliver_queued(sync: ActivitySync, queue: MemoryQueue, remaining: int = PLENTY) -> dict[str, Any]:
    message = message_from_sqs_record(record_for(queue.sent.pop(0)))
    return sync.process(message, parse_message(message), lambda: remaining).as_dict()


def drain(sync: ActivitySync, queue: MemoryQueue, remaining: int = PLENTY) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = []
    for _ in range(200):
        if not queue.sent:
            return outcomes
        outcomes.append(deliver_queued(sync, queue, remaining))
    raise AssertionError("the listing never finished")


def fully_synced(docs: list[dict[str, Any]], field: str = "start_date",
                 event: str = "activities.fully_synced") -> bytes:
    start, end = range_of(docs, field)
    return webhook_body(event, account=ACCOUNT, user=USER, available_from=start, available_to=end,
                        available_count=len(docs))


def window_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("argyle-window", "argyle-prefetch"))]


def listed_ranges(argyle: FakeArgyle) -> list[tuple[str | None, str | None]]:
    return sorted({(f, t) for _, f, t, _ in argyle.list_requests}, key=lambda r: r[0] or "")


# --- splitting ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("low", "high", "k"), [(0, 99, 4), (10, 13, 4), (5, 6, 4), (0, 1_000_003, 7), (7, 7, 3)])
def test_a_start_range_splits_into_disjoint_adjacent_windows_that_cover_it_exactly(low: int, high: int, k: int):
    # When a range is split
    windows = split_start_range(low, high, k)
    # Then the windows are at most k, start at low, end at high, and each begins the second after
    # the one before ends (no gap, no overlap), none empty
    assert 1 <= len(windows) <= k and len(windows) == min(k, high - low + 1)
    assert windows[0][0] == low and windows[-1][1] == high
    assert all(first <= last for first, last in windows)
    assert all(windows[i][1] + 1 == windows[i + 1][0] for i in range(len(windows) - 1))


def test_window_ranges_cut_where_the_activities_are_and_reach_the_outer_bounds():
    # When the activities lie in [1000, 1999] and the windows must cover [0, 10_000]
    windows = window_ranges((1000, 1999), 4, (0, 10_000))
    # Then the inner cuts split [1000, 1999] evenly and the outer windows reach both bounds
    assert windows == [(0, 1249), (1250, 1499), (1500, 1749), (1750, 10_000)]


@pytest.mark.parametrize("span", [(5000, 5000), (20_000, 30_000)])
def test_activities_at_one_start_or_outside_the_range_leave_it_one_window(span: tuple[int, int]):
    # When every activity starts in the same second, or the span lies outside the range to cover,
    # then there is nothing to cut: one window covers the whole range
    assert window_ranges(span, 4, (0, 10_000)) == [(0, 10_000)]


def test_a_large_listing_whose_activities_all_start_at_once_is_listed_whole_and_exact():
    # Given 150 activities (above the threshold) that all start in the same second
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = [argyle.add_dated(ACCOUNT, n, BASE_TIME) for n in range(150)]
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    outcome = deliver(sync, fully_synced(docs))
    # Then it is listed as one sequence (no window to cut it into), completely
    assert [r[3] for r in argyle.list_requests] == [None] and outcome["pages"] == 6 and queue.sent == []
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


class UndatedAfterCountArgyle(SharedArgyle):
    """An activity without a start date appears right after Argyle counted the dated activities,
    before the listing's first page."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.undated_after_count: dict[str, Any] | None = None

    def count_activities(self, account: str, from_start_date: str | None = None,
                         to_start_date: str | None = None) -> int | None:
        counted = super().count_activities(account, from_start_date, to_start_date)
        if from_start_date is not None and self.undated_after_count is not None:
            self.accounts[account][self.undated_after_count["id"]] = self.undated_after_count
            self.undated_after_count = None
        return counted


def test_a_large_listing_whose_activities_all_start_at_once_still_stores_an_undated_one_that_appears_meanwhile():
    # Given 150 activities (above the threshold) that all start in the same second, and one
    # without a start date that Argyle adds right after counting them
    argyle, activities = UndatedAfterCountArgyle(page_limit=PAGE), LockedActivities()
    docs = [argyle.add_dated(ACCOUNT, n, BASE_TIME) for n in range(150)]
    undated = make_activity(ACCOUNT, 900, updated=argyle.tick())
    undated["start_date"] = None
    argyle.undated_after_count = undated
    sync, _, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    deliver(sync, fully_synced(docs))
    # Then, with no window to cut it into, the account was listed whole (no date filter), so the
    # undated activity is stored too and the copy is exact
    assert listed_ranges(argyle) == [(None, None)]
    assert undated["id"] in activities.live(ACCOUNT) and activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


# --- when a listing is split -----------------------------------------------------------------------

def test_a_large_listing_is_listed_as_concurrent_windows_and_the_copy_is_exact():
    # Given 300 activities (above the threshold of 100) and a barrier every window's first
    # request must reach before any is answered: only concurrent windows pass it
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    argyle.first_page_barrier = threading.Barrier(WINDOWS)
    sync, queue, state = make_sync(argyle, activities)
    # When its fully_synced is processed
    outcome = deliver(sync, fully_synced(docs))
    # Then 4 disjoint windows were listed from 4 threads, the copy is exact, the account is synced
    assert outcome["action"] == "synced" and outcome["completed"] and outcome["exact"]
    assert len(listed_ranges(argyle)) == WINDOWS
    # (each window's pages are fetched by its own prefetching thread while the window writes)
    assert len({ident for name, ident in argyle.threads if name.startswith("argyle-prefetch")}) == WINDOWS
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced" and queue.sent == []
    # And Argyle was asked only for the windows' pages plus the two counts (whole account, dated)
    pages = outcome["pages"]
    assert sum(activities.upsert_many_calls) == 300
    assert argyle.calls == pages + 2 and len(argyle.count_requests) == 2
    assert pages <= 300 // PAGE + WINDOWS
    assert not window_threads()


def test_a_listing_at_or_below_the_threshold_is_sequential_with_no_count_call():
    # Given 100 activities (the threshold) announced with their available_count
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 100)
    sync, _, _ = make_sync(argyle, activities)
    # When its fully_synced is processed
    deliver(sync, fully_synced(docs))
    # Then one whole-account listing ran, and no count was asked for
    assert listed_ranges(argyle) == [(None, None)] and argyle.count_requests == []
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_undated_activities_keep_the_listing_whole_so_they_are_still_caught():
    # Given 300 dated activities and 2 without a start date (no date filter matches those)
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    for n in (900, 901):
        undated = make_activity(ACCOUNT, n, updated=argyle.tick())
        undated["start_date"] = None
        argyle.accounts[ACCOUNT][undated["id"]] = undated
    sync, _, _ = make_sync(argyle, activities)
    # When its fully_synced is processed
    deliver(sync, fully_synced(docs))
    # Then Argyle's whole count differed from its dated count, so the listing was the whole
    # account's, one sequence, and the undated activities are stored
    assert len(argyle.count_requests) == 2
    assert listed_ranges(argyle) == [(None, None)]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and len(activities.live(ACCOUNT)) == 302


def test_on_v2_without_counts_a_large_listing_stays_sequential_with_no_extra_call():
    # Given a v2 account of 300 gigs (v2's lists carry no count)
    argyle, activities = SharedArgyle(page_limit=PAGE, api=V2), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, _, _ = make_sync(argyle, activities, api=V2)
    # When its gigs.fully_synced is processed
    outcome = deliver(sync, fully_synced(docs, "start_datetime", "gigs.fully_synced"))
    # Then one sequence listed it: no count asked for, no window
    assert listed_ranges(argyle) == [(None, None)] and argyle.count_requests == []
    assert argyle.calls == outcome["pages"] == 12
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_partially_synced_range_is_split_within_its_own_bounds():
    # Given 400 activities, of which a partially_synced announces the first 200 days' worth
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 400)
    first = docs[:200]
    start, end = range_of(first)
    body = webhook_body("activities.partially_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, available_count=200, days_synced=9)
    sync, _, _ = make_sync(argyle, activities)
    # When it is processed
    deliver(sync, body)
    # Then its windows begin at available_from and end at available_to exactly, and only that
    # range is stored
    ranges = listed_ranges(argyle)
    assert len(ranges) == WINDOWS and ranges[0][0] == start and ranges[-1][1] == end
    assert set(activities.live(ACCOUNT)) == {d["id"] for d in first}


@pytest.mark.parametrize(("size", "windows"), [(300, WINDOWS), (THRESHOLD, 1)])
def test_a_whole_account_announced_without_a_count_is_counted_first_and_split_only_when_large(
        size: int, windows: int):
    # Given an account of `size` activities whose fully_synced carries no available_count
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, size)
    start, end = range_of(docs)
    body = webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end)
    sync, _, _ = make_sync(argyle, activities)
    # When it is processed
    deliver(sync, body)
    # Then Argyle's count decided: a large account in windows (after a second count, of its dated
    # activities), one at the threshold as one whole-account sequence after that one count
    assert len(listed_ranges(argyle)) == windows
    assert argyle.count_requests[0] == (ACCOUNT, None, None) and len(argyle.count_requests) == (2 if windows > 1 else 1)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


@pytest.mark.parametrize(("in_range", "windows"), [(200, WINDOWS), (THRESHOLD, 1)])
def test_a_range_announced_without_a_count_is_counted_first_and_split_only_when_large(in_range: int, windows: int):
    # Given 400 activities, and a partially_synced naming the first `in_range` of them, with no count
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 400)
    start, end = range_of(docs[:in_range])
    body = webhook_body("activities.partially_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, days_synced=9)
    sync, _, _ = make_sync(argyle, activities)
    # When it is processed
    deliver(sync, body)
    # Then Argyle was asked for that range's count, once; a large range was listed in windows
    # within its bounds, one at the threshold as one sequence; and only that range is stored
    assert argyle.count_requests == [(ACCOUNT, start, end)]
    ranges = listed_ranges(argyle)
    assert len(ranges) == windows and ranges[0][0] == start and ranges[-1][1] == end
    assert set(activities.live(ACCOUNT)) == {d["id"] for d in docs[:in_range]}


def test_a_range_with_fractional_bounds_is_listed_within_them_exactly_each_activity_once():
    # Given 400 hourly activities, one more a quarter second past the 199th hour, and a
    # partially_synced whose bounds carry half seconds: from half a second after the first
    # activity (which it leaves out) to half a second after the 199th hour
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 400)
    late = argyle.add_dated(ACCOUNT, 9000, BASE_TIME + timedelta(hours=199, seconds=0.25))
    start, end = iso(BASE_TIME + timedelta(seconds=0.5)), iso(BASE_TIME + timedelta(hours=199, seconds=0.5))
    in_range = {d["id"] for d in docs[1:200]} | {late["id"]}
    body = webhook_body("activities.partially_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, available_count=len(in_range), days_synced=9)
    sync, _, _ = make_sync(argyle, activities)
    # When it is processed
    deliver(sync, body)
    # Then it was listed in windows, exactly what lies within the bounds as given is stored (not
    # the activity half a second before them, and the one in their last half second), and each
    # activity was listed once: the windows do not overlap
    assert len(listed_ranges(argyle)) == WINDOWS
    assert set(activities.live(ACCOUNT)) == in_range
    assert sum(activities.upsert_many_calls) == len(in_range)


@pytest.mark.parametrize(("from_start_date", "to_start_date"), [("2024-01-01T00:00:00Z", None),
                                                                  (None, "2024-12-31T00:00:00Z")])
def test_a_range_open_at_one_end_is_never_split(from_start_date: str | None, to_start_date: str | None):
    # Given a large range that is bounded on one side only (as `added` names them)
    argyle = SharedArgyle(page_limit=PAGE)
    argyle.add(ACCOUNT, 300)
    # When its windows are planned
    plan = plan_windows(ACCOUNT, from_start_date, to_start_date, known_count=300, argyle=argyle, k=WINDOWS,
                        threshold=THRESHOLD, list_counts=True, span_hint=lambda: None)
    # Then it is listed as one sequence, and Argyle was not asked to count it
    assert plan is None and argyle.count_requests == []


def test_a_large_listing_is_split_into_two_windows_when_two_are_configured():
    # Given 300 activities (above the threshold) and a sync configured to list in two windows
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities, windows=2)
    # When its fully_synced is processed
    outcome = deliver(sync, fully_synced(docs))
    # Then two disjoint windows listed it, and the copy is exact and recorded
    assert len(listed_ranges(argyle)) == 2 and outcome["completed"] and outcome["exact"]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and sum(activities.upsert_many_calls) == 300
    assert state.accounts[ACCOUNT]["status"] == "fully_synced" and queue.sent == []


@pytest.mark.parametrize("given", ["available_from", "available_to"])
def test_a_large_fully_synced_giving_only_one_bound_of_its_range_is_still_listed_in_windows(given: str):
    # Given 300 activities and a fully_synced that gives only one of available_from / available_to
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    start, end = range_of(docs)
    bound = start if given == "available_from" else end
    assert bound is not None
    body = webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_count=300,
                        **{given: bound})
    sync, queue, state = make_sync(argyle, activities)
    # When it is processed
    outcome = deliver(sync, body)
    # Then the whole account was listed in windows (cut over every possible date: there is no span
    # to cut evenly), and the copy is exact and recorded
    assert len(listed_ranges(argyle)) == WINDOWS and outcome["completed"] and outcome["exact"]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced" and queue.sent == []


# --- continuations, changes, failures --------------------------------------------------------------

def test_several_windows_continue_in_one_message_each_on_its_exact_cursor():
    # Given 300 activities and an invocation that is always short of time (one page per window)
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    first = deliver(sync, fully_synced(docs), remaining=60_000)
    # Then each window wrote one page and one continuation carries all four windows' cursors
    assert first["action"] == "continued" and first["pages"] == WINDOWS
    assert len(queue.sent) == 1 and queue.sent[0].event_name == CONTINUATION_EVENT
    job = parse_message(message_from_sqs_record(record_for(queue.sent[0]))).data
    assert isinstance(job, Continuation) and len(job.windows) == WINDOWS
    assert all(w.cursor == {"offset": str(PAGE)} and not w.done for w in job.windows)
    # And when the continuations run (still one page per window each)
    outcomes = drain(sync, queue, remaining=60_000)
    # Then no page was listed twice, no count asked again, and the copy is exact and recorded
    assert outcomes[-1]["completed"] and state.accounts[ACCOUNT]["status"] == "fully_synced"
    assert argyle.calls == first["pages"] + sum(o["pages"] for o in outcomes) + 2
    assert sum(activities.upsert_many_calls) == 300
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_window_whose_data_changes_mid_listing_makes_another_pass_that_ends_exact():
    # Given 300 activities, and Argyle removing one early activity and adding one inside the
    # windows once, after every window's first page was read (so each window sees it change)
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    changed = threading.Event()
    change_lock = threading.Lock()

    def change_once(account: str | None) -> None:
        with change_lock:  # every later page waits until the change is made
            if changed.is_set():
                return
            argyle.await_first_pages(WINDOWS)
            changed.set()
            argyle.remove(ACCOUNT, docs[1]["id"])
            argyle.add_dated(ACCOUNT, 5000, BASE_TIME + timedelta(hours=150, minutes=30))

    argyle.between_pages = change_once
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced and whatever it queues are processed
    first = deliver(sync, fully_synced(docs))
    outcomes = drain(sync, queue)
    # Then the change was noticed, a second pass ran, and its sweep removed what Argyle removed
    assert first["relisted"] and outcomes and outcomes[-1]["listing_pass"] == 2
    assert outcomes[-1]["completed"] and not outcomes[-1]["unstable"]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


class ChangingAfterCountArgyle(SharedArgyle):
    """Removes one activity right after Argyle counted the dated activities, before any window's
    first page: every window's pages then agree with each other, but not with that count."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.remove_after_count: str | None = None

    def count_activities(self, account: str, from_start_date: str | None = None,
                         to_start_date: str | None = None) -> int | None:
        counted = super().count_activities(account, from_start_date, to_start_date)
        if from_start_date is not None and self.remove_after_count is not None:
            self.remove(account, self.remove_after_count)
            self.remove_after_count = None
        return counted


def test_an_activity_removed_between_argyles_count_and_the_windows_makes_another_pass_that_ends_exact():
    # Given 300 synced activities, one of which Argyle removes (with no webhook) after counting the
    # account for the next fully_synced but before any of its windows' first pages
    argyle, activities = ChangingAfterCountArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.remove_after_count = docs[1]["id"]
    # When the next fully_synced and whatever it queues are processed
    first = deliver(sync, fully_synced(docs))
    outcomes = drain(sync, queue)
    # Then the windows' rows not adding up to Argyle's count made a second pass, whose sweep removed
    # the stored activity Argyle no longer has: the copy recorded as exact is exact
    assert first["relisted"] and not first["completed"]
    assert outcomes and outcomes[-1]["listing_pass"] == 2 and outcomes[-1]["exact"]
    assert docs[1]["id"] not in activities.live(ACCOUNT)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_large_account_with_a_long_stretch_without_activities_is_listed_in_one_pass_and_recorded_exact():
    # Given 300 activities in two clusters far apart, so the middle windows hold none
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = [argyle.add_dated(ACCOUNT, n, BASE_TIME + timedelta(hours=n)) for n in range(150)]
    docs += [argyle.add_dated(ACCOUNT, n, BASE_TIME + timedelta(days=3000, hours=n)) for n in range(150, 300)]
    sync, queue, state = make_sync(argyle, activities)
    # When its fully_synced is processed
    outcome = deliver(sync, fully_synced(docs))
    # Then the empty windows count for nothing: one pass, no relisting, the copy recorded as exact
    assert len(listed_ranges(argyle)) == WINDOWS
    assert outcome["action"] == "synced" and not outcome["relisted"] and outcome["exact"] and queue.sent == []
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_windows_with_exactly_the_margin_left_list_to_the_end_in_one_invocation():
    # Given 300 activities (4 windows of 3 pages) and an invocation with exactly the margin left
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    margin = sync.ctx.options.continuation_margin_ms
    # When its fully_synced is processed
    outcome = deliver(sync, fully_synced(docs), remaining=margin)
    # Then it was not short of time: every window listed to its end, nothing was handed on
    assert outcome["action"] == "synced" and queue.sent == []
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_listing_part_in_windows_whose_every_window_argyle_fails_fails_the_record_to_be_retried():
    # Given a fully_synced in windows that wrote one page per window in its first (short) invocation
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities)
    assert deliver(sync, fully_synced(docs), remaining=1)["pages"] == WINDOWS
    next_part = queue.sent[0]
    # When Argyle gives out on every window's next page
    argyle.fail_next = [unavailable() for _ in range(WINDOWS)]
    with pytest.raises(ArgyleUnavailable):
        deliver_queued(sync, queue)
    # Then nothing was handed on (SQS retries the record with its own cursors), no sync is recorded,
    # and its retry finishes the copy exactly
    assert queue.sent == [] and argyle.fail_next == [] and not window_threads()
    assert ACCOUNT not in state.accounts
    queue.sent.append(next_part)
    assert drain(sync, queue)[-1]["completed"]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and sum(activities.upsert_many_calls) == 300


def test_a_write_failing_in_one_window_fails_the_record_with_no_thread_left():
    # Given 300 activities, and the third page written (whichever window it is in) failing
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    activities.fail_on_write = 2
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed, the write's error is the record's error
    with pytest.raises(RuntimeError, match="DynamoDB write failed"):
        deliver(sync, fully_synced(docs))
    # Then every window's thread has ended, nothing was queued, the account is not recorded, and
    # the other windows stopped after their page in hand (at most one more page each)
    assert not window_threads()
    assert queue.sent == [] and ACCOUNT not in state.accounts
    assert len(activities.upsert_many_calls) <= 2 + WINDOWS
    # And when the record comes back (the same body), it lists everything: the copy is exact
    activities.fail_on_write = None
    deliver(sync, fully_synced(docs))
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_argyle_giving_out_in_one_window_hands_every_window_on_from_its_own_cursor():
    # Given 300 activities and Argyle answering the 7th request (2 counts, then window pages) with
    # an exhausted 429
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    original = argyle._call

    def fail_seventh() -> None:
        with argyle.lock:
            if argyle.calls == 6:
                argyle.calls += 1
                raise unavailable()
        original()

    argyle._call = fail_seventh  # type: ignore[method-assign]
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    first = deliver(sync, fully_synced(docs))
    # Then the record did not fail: the windows' cursors went on in one continuation
    assert first["action"] == "continued" and first["argyle_gave_out"] and len(queue.sent) == 1
    assert not window_threads()
    # And the continuation finishes the listing exactly, with no activity written twice by a
    # window that restarted from its first page
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert sum(activities.upsert_many_calls) == 300
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


class GivingOutArgyle(SharedArgyle):
    """Gives out (an exhausted 429) on call number `fail_at`; any later page of another window is
    answered only once the failing window has finished handling it (its fetching thread ended)."""

    def __init__(self, fail_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.failed_in: threading.Thread | None = None

    def _call(self) -> None:
        with self.lock:
            failed_in = self.failed_in
            if failed_in is None and self.calls + 1 == self.fail_at:
                self.calls += 1
                self.failed_in = threading.current_thread()
                raise unavailable()
        if failed_in is not None:
            failed_in.join(WAIT_S)
            assert not failed_in.is_alive(), "the window Argyle gave out in never ended"
        super()._call()


def test_argyle_giving_out_in_one_window_stops_the_others_after_their_page_in_hand():
    # Given 600 activities (4 windows of 6 pages) and Argyle giving out on the 7th request (2
    # counts, the 4 windows' first pages, then one window's second page)
    argyle, activities = GivingOutArgyle(7, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 600)
    sync, queue, _ = make_sync(argyle, activities)
    # When the fully_synced is processed
    first = deliver(sync, fully_synced(docs))
    # Then the other windows did not go on asking an Argyle that is giving out: each wrote at most
    # the page it had in hand, then every window was handed on in one continuation
    assert first["action"] == "continued" and first["argyle_gave_out"] and len(queue.sent) == 1
    assert first["pages"] <= WINDOWS + (WINDOWS - 1)
    assert not window_threads()
    # And the continuation still finishes the copy exactly
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


class WindowThreadsArgyle(SharedArgyle):
    """Remembers which window's thread started each listing (by its from_start_date), and tells
    when each listing began asking for its second page."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_of: dict[int, str | None] = {}
        self.second_page_asked: dict[str | None, threading.Event] = {}

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        with self.lock:
            self.window_of[threading.get_ident()] = from_start_date
            asked = self.second_page_asked.setdefault(from_start_date, threading.Event())
        return self._telling(super().list_activity_pages(account, from_start_date, to_start_date, cursor), asked)

    @staticmethod
    def _telling(pages: Iterator[ActivityPage], asked: threading.Event) -> Iterator[ActivityPage]:
        for page in pages:
            yield page
            asked.set()  # resumed after a page: the next one is being asked for


def test_each_window_fetches_its_next_page_while_it_writes_the_current_one():
    # Given 300 activities (4 windows of 3 pages), and each window's first write waiting until that
    # window's second page has been asked for
    argyle = WindowThreadsArgyle(page_limit=PAGE)
    docs = argyle.add(ACCOUNT, 300)
    first_write_done: set[str | None] = set()

    class FirstWritesWait(LockedActivities):
        def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                        resync_marker: str | None = None) -> UpsertResult:
            window = argyle.window_of[threading.get_ident()]
            if window not in first_write_done:
                first_write_done.add(window)
                if not argyle.second_page_asked[window].wait(WAIT_S):
                    pytest.fail("the window's next page was not asked for while its page was written")
            return super().upsert_many(activities, synced_at, resync_marker=resync_marker)

    activities = FirstWritesWait()
    sync, queue, _ = make_sync(argyle, activities)
    # When its fully_synced is processed
    outcome = deliver(sync, fully_synced(docs))
    # Then every window had its next page on the way while it wrote its first one (else the write
    # above fails), and the copy is exact, each page listed once
    assert outcome["completed"] and len(first_write_done) == WINDOWS and outcome["pages"] == 12
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and queue.sent == []
    assert not window_threads()


class ClosingSource(FakeArgyle):
    """One window's own Argyle client: remembers the thread of its window, and tells when its
    listing was closed (the window is done with it)."""

    def __init__(self, accounts: dict[str, dict[str, dict[str, Any]]]) -> None:
        super().__init__(page_limit=PAGE)
        self.accounts = accounts
        self.window_thread: threading.Thread | None = None
        self.closed = threading.Event()

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        self.window_thread = threading.current_thread()
        return self._closing(super().list_activity_pages(account, from_start_date, to_start_date, cursor))

    def _closing(self, pages: Iterator[ActivityPage]) -> Iterator[ActivityPage]:
        try:
            yield from pages
        finally:
            self.closed.set()


def test_once_one_window_finds_the_invocation_short_of_time_no_other_window_starts_another_page():
    # Given two windows of 3 pages each, each with its own client; window B reads the clock just
    # before the deadline passes (after its first page), while window A's first write ends just
    # after it, so A is the one that finds the time short
    argyle = FakeArgyle(page_limit=PAGE)
    argyle.add(ACCOUNT, 150)
    a, b = ClosingSource(argyle.accounts), ClosingSource(argyle.accounts)
    windows = [ListingWindow(from_start_date=iso(BASE_TIME), to_start_date=iso(BASE_TIME + timedelta(hours=74))),
               ListingWindow(from_start_date=iso(BASE_TIME + timedelta(hours=75)),
                             to_start_date=iso(BASE_TIME + timedelta(hours=149)))]
    deadline_passed = threading.Event()
    writers: list[threading.Thread] = []
    b_read_the_clock_after_writing = False

    class SlowWrites(LockedActivities):
        def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                        resync_marker: str | None = None) -> UpsertResult:
            if threading.current_thread() is a.window_thread:
                assert deadline_passed.wait(WAIT_S)  # A's write ends after the deadline
            writers.append(threading.current_thread())
            return super().upsert_many(activities, synced_at, resync_marker=resync_marker)

    def out_of_time() -> bool:
        nonlocal b_read_the_clock_after_writing
        me = threading.current_thread()
        if me is b.window_thread and me in writers and not b_read_the_clock_after_writing:
            b_read_the_clock_after_writing = True
            reading = deadline_passed.is_set()  # B reads the clock: not yet ...
            deadline_passed.set()  # ... then the deadline passes, and B is paused until A is done
            assert a.closed.wait(WAIT_S)
            return reading
        return deadline_passed.is_set()

    store = SlowWrites()
    # When the windows are listed
    run = list_windows(ACCOUNT, windows, clients=[a, b], store=store, now=lambda: iso(BASE_TIME),
                       marker=None, on_written=lambda _result, _rows: None, out_of_time=out_of_time)
    # Then B, though its own reading said there was time, stopped with A: each window wrote its
    # first page only and hands on the cursor of its second
    assert b_read_the_clock_after_writing
    assert run.pages == 2 and store.upsert_many_calls == [PAGE, PAGE]
    assert [w.cursor for w in windows] == [{"offset": str(PAGE)}] * 2 and not any(w.done for w in windows)
    assert not window_threads()




class EndingWithoutALastPage(FakeArgyle):
    """A page source that ends its listing without a last page (no page at all), as a source other
    than Argyle's client may."""

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        return iter(())


def test_a_window_whose_source_ends_without_a_last_page_is_finished_not_listed_again():
    # Given two windows whose sources end their listings with no page at all
    windows = [ListingWindow(from_start_date=iso(BASE_TIME), to_start_date=iso(BASE_TIME + timedelta(hours=9))),
               ListingWindow(from_start_date=iso(BASE_TIME + timedelta(hours=10)),
                             to_start_date=iso(BASE_TIME + timedelta(hours=19)))]
    sources = [EndingWithoutALastPage(page_limit=PAGE), EndingWithoutALastPage(page_limit=PAGE)]
    # When they are listed
    run = list_windows(ACCOUNT, windows, clients=sources, store=LockedActivities(), now=lambda: iso(BASE_TIME),
                       marker=None, on_written=lambda _result, _rows: None, out_of_time=lambda: False)
    # Then both are done, with nothing left to hand on (a window not done would be listed again by
    # the next part, for ever)
    assert run.pages == 0 and not run.errors
    assert [(w.done, w.cursor) for w in windows] == [(True, {}), (True, {})]


class StartsAfter(ClosingSource):
    """A window's client that answers its listing only once `other` has closed its own (a window
    whose thread started late)."""

    def __init__(self, accounts: dict[str, dict[str, dict[str, Any]]], other: ClosingSource) -> None:
        super().__init__(accounts)
        self.other = other

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        assert self.other.closed.wait(WAIT_S)
        return super().list_activity_pages(account, from_start_date, to_start_date, cursor)


def test_a_window_that_starts_after_another_found_the_time_short_still_lists_its_first_page():
    # Given two windows of 3 pages each in an invocation already short of time, window B starting
    # only once window A has written its page and stopped
    argyle = FakeArgyle(page_limit=PAGE)
    argyle.add(ACCOUNT, 150)
    a = ClosingSource(argyle.accounts)
    b = StartsAfter(argyle.accounts, other=a)
    windows = [ListingWindow(from_start_date=iso(BASE_TIME), to_start_date=iso(BASE_TIME + timedelta(hours=74))),
               ListingWindow(from_start_date=iso(BASE_TIME + timedelta(hours=75)),
                             to_start_date=iso(BASE_TIME + timedelta(hours=149)))]
    store = LockedActivities()
    # When the windows are listed
    run = list_windows(ACCOUNT, windows, clients=[a, b], store=store, now=lambda: iso(BASE_TIME), marker=None,
                       on_written=lambda _result, _rows: None, out_of_time=lambda: True)
    # Then each window wrote one page (however short the time, every window progresses, so a large
    # account's listing always ends) and hands on the cursor of its next
    assert run.pages == 2 and store.upsert_many_calls == [PAGE, PAGE]
    assert [w.cursor for w in windows] == [{"offset": str(PAGE)}] * 2

class SecondPageWaitsFor(ClosingSource):
    """A window's client whose second page (fetched ahead while the first is written) is answered
    only once `release` is set."""

    def __init__(self, accounts: dict[str, dict[str, dict[str, Any]]], release: threading.Event) -> None:
        super().__init__(accounts)
        self.release = release

    def _closing(self, pages: Iterator[ActivityPage]) -> Iterator[ActivityPage]:
        try:
            for taken, page in enumerate(pages):
                if taken == 1:
                    assert self.release.wait(WAIT_S)
                yield page
        finally:
            self.closed.set()


def test_a_failing_window_stops_the_others_without_waiting_for_its_own_fetch_in_flight():
    # Given two windows of 6 pages each; window A's first write fails while its second page, fetched
    # ahead, is answered by Argyle only once window B has stopped listing
    argyle = FakeArgyle(page_limit=PAGE)
    argyle.add(ACCOUNT, 300)
    b = ClosingSource(argyle.accounts)
    a = SecondPageWaitsFor(argyle.accounts, release=b.closed)
    windows = [ListingWindow(from_start_date=iso(BASE_TIME), to_start_date=iso(BASE_TIME + timedelta(hours=149))),
               ListingWindow(from_start_date=iso(BASE_TIME + timedelta(hours=150)),
                             to_start_date=iso(BASE_TIME + timedelta(hours=299)))]
    a_failed = threading.Event()

    class FailingInA(LockedActivities):
        def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                        resync_marker: str | None = None) -> UpsertResult:
            if threading.current_thread() is a.window_thread:
                a_failed.set()
                raise RuntimeError("DynamoDB write failed")
            assert a_failed.wait(WAIT_S)  # B writes once A has failed
            return super().upsert_many(activities, synced_at, resync_marker=resync_marker)

    store = FailingInA()
    # When the windows are listed, the write's error is the listing's error
    with pytest.raises(RuntimeError, match="DynamoDB write failed"):
        list_windows(ACCOUNT, windows, clients=[a, b], store=store, now=lambda: iso(BASE_TIME), marker=None,
                     on_written=lambda _result, _rows: None, out_of_time=lambda: False)
    # Then B stopped after the page in hand, not at the end of its listing: A's fetch in flight
    # (which waits for B here, as a slow Argyle answer would not) did not hold the stop back
    assert len(store.upsert_many_calls) <= 2
    assert a.closed.is_set() and b.closed.is_set() and not window_threads()

class FailingFirstWindowArgyle(SharedArgyle):
    """The window whose first page holds `first_id` is the failing one: every other window asks
    for each page after its first only once the failing window's listing has been closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_id: str | None = None
        self.failing_window_closed = threading.Event()

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        failing = False
        try:
            for taken, page in enumerate(super().list_activity_pages(account, from_start_date, to_start_date,
                                                                     cursor), start=1):
                if taken == 1:
                    failing = any(activity.id == self.first_id for activity in page.activities)
                yield page
                if not failing:
                    assert self.failing_window_closed.wait(WAIT_S)
        finally:
            if failing:
                self.failing_window_closed.set()


def test_a_write_failing_once_in_one_window_stops_the_others_after_their_page_in_hand():
    # Given 300 activities (4 windows of 3 pages), the first write of the earliest window failing
    # once (the other windows' writes succeed), and the other windows' later pages answered only
    # once the failing window is done with its listing
    argyle = FailingFirstWindowArgyle(page_limit=PAGE)
    docs = argyle.add(ACCOUNT, 300)
    argyle.first_id = docs[0]["id"]
    failed: list[bool] = []

    class FailingOnce(LockedActivities):
        def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                        resync_marker: str | None = None) -> UpsertResult:
            if not failed and any(activity.id == docs[0]["id"] for activity in activities):
                failed.append(True)
                raise RuntimeError("DynamoDB write failed")
            return super().upsert_many(activities, synced_at, resync_marker=resync_marker)

    activities = FailingOnce()
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed, the write's error is the record's error
    with pytest.raises(RuntimeError, match="DynamoDB write failed"):
        deliver(sync, fully_synced(docs))
    # Then the other windows did not list on to their ends: each wrote at most its first page and
    # the one it had in hand when the failing window stopped
    assert len(activities.upsert_many_calls) <= 2 * (WINDOWS - 1)
    assert not window_threads() and queue.sent == [] and ACCOUNT not in state.accounts
    # And when the record comes back (the same body), the copy is exact
    deliver(sync, fully_synced(docs))
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_windows_that_end_in_different_parts_leave_the_longer_ones_to_finish_exactly():
    # Given 300 hourly activities and 50 more in the first quarter of their span, so that the first
    # window has 5 pages and the others 3, listed in invocations always short of time (one page per
    # window each)
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    docs += [argyle.add_dated(ACCOUNT, 1000 + n, BASE_TIME + timedelta(hours=n, minutes=30)) for n in range(50)]
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced and its continuations are processed
    first = deliver(sync, fully_synced(docs), remaining=60_000)
    outcomes = drain(sync, queue, remaining=60_000)
    # Then the last two parts listed the first window alone, and the copy is exact and recorded
    assert first["pages"] == WINDOWS and [o["pages"] for o in outcomes] == [WINDOWS, WINDOWS, 1, 1]
    assert outcomes[-1]["completed"] and state.accounts[ACCOUNT]["status"] == "fully_synced"
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and sum(activities.upsert_many_calls) == 350


class LaggingCountArgyle(SharedArgyle):
    """Argyle whose `count` lags: every page of a listing call reports the count of its first page."""

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        first_count: int | None = None
        for page in super().list_activity_pages(account, from_start_date, to_start_date, cursor):
            first_count = page.count if first_count is None else first_count
            yield ActivityPage(page.activities, page.next_cursor, first_count)


def test_a_window_that_lists_fewer_rows_than_a_lagging_count_makes_another_pass_that_ends_exact():
    # Given 300 activities at an Argyle whose count lags, which removes an early activity once every
    # window has read its first page: the first window's offset pages then skip one activity, while
    # its count still says 75
    argyle, activities = LaggingCountArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    changed = threading.Event()
    change_lock = threading.Lock()

    def remove_once(account: str | None) -> None:
        with change_lock:
            if changed.is_set():
                return
            argyle.await_first_pages(WINDOWS)
            changed.set()
            argyle.remove(ACCOUNT, docs[1]["id"])

    argyle.between_pages = remove_once
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced and whatever it queues are processed
    first = deliver(sync, fully_synced(docs))
    outcomes = drain(sync, queue)
    # Then the rows that fell short of the count were noticed, a second pass ran, and the copy is
    # exact: the skipped activity stored, the removed one removed
    assert first["relisted"] and outcomes and outcomes[-1]["listing_pass"] == 2
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert docs[25]["id"] in activities.live(ACCOUNT) and docs[1]["id"] not in activities.live(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


class CappedArgyle(SharedArgyle):
    """A client that stops each listing call after `max_pages` pages, as ArgyleClient's page cap
    does: PageLimitExceeded, with the cursor to resume from (or none, when `resumable` is off)."""

    def __init__(self, max_pages: int, resumable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_pages, self.resumable = max_pages, resumable

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        pages = super().list_activity_pages(account, from_start_date, to_start_date, cursor)
        for taken, page in enumerate(pages, start=1):
            yield page
            if page.next_cursor and taken >= self.max_pages:
                raise PageLimitExceeded(f"more than {self.max_pages} pages",
                                        next_cursor=dict(page.next_cursor) if self.resumable else None)


def test_windows_that_reach_the_clients_page_cap_continue_from_their_exact_cursors():
    # Given 300 activities (3 pages per window) and a client that lists at most 2 pages a call
    argyle, activities = CappedArgyle(2, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    first = deliver(sync, fully_synced(docs))
    # Then the record did not fail: every window went on in one continuation, from where it stopped
    assert first["action"] == "continued" and first["pages"] == 2 * WINDOWS and len(queue.sent) == 1
    job = parse_message(message_from_sqs_record(record_for(queue.sent[0]))).data
    assert isinstance(job, Continuation)
    assert [w.cursor for w in job.windows] == [{"offset": str(2 * PAGE)}] * WINDOWS
    # And the continuation finishes the copy exactly, no page listed twice
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert sum(activities.upsert_many_calls) == 300
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_a_page_cap_with_no_cursor_to_resume_from_fails_the_record_and_records_no_sync():
    # Given a client whose page cap gives no cursor to resume from
    argyle, activities = CappedArgyle(2, resumable=False, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed, the record fails (SQS retries it) rather than record a
    # truncated copy as complete
    with pytest.raises(PageLimitExceeded):
        deliver(sync, fully_synced(docs))
    assert queue.sent == [] and ACCOUNT not in state.accounts and not window_threads()


def test_a_sequential_listing_that_reaches_the_clients_page_cap_continues_from_its_exact_cursor():
    # Given 60 activities (below the threshold: one sequence of 3 pages) and a client capped at 2 pages a call
    argyle, activities = CappedArgyle(2, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 60)
    sync, queue, state = make_sync(argyle, activities)
    # When the fully_synced is processed
    first = deliver(sync, fully_synced(docs))
    # Then the record did not fail: the listing went on in a continuation from the third page
    assert first["action"] == "continued" and first["pages"] == 2 and len(queue.sent) == 1
    job = parse_message(message_from_sqs_record(record_for(queue.sent[0]))).data
    assert isinstance(job, Continuation) and not job.windows and job.cursor == {"offset": str(2 * PAGE)}
    # And the continuation finishes the copy exactly, no page listed twice
    drain(sync, queue)
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and activities.upsert_many_calls == [PAGE] * 2 + [10]
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_a_sequential_listings_page_cap_with_no_cursor_fails_the_record_and_records_no_sync():
    argyle, activities = CappedArgyle(2, resumable=False, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 60)
    sync, queue, state = make_sync(argyle, activities)
    with pytest.raises(PageLimitExceeded):
        deliver(sync, fully_synced(docs))
    assert queue.sent == [] and ACCOUNT not in state.accounts


def test_a_resync_in_windows_removes_what_argyle_no_longer_has():
    # Given 300 activities synced, then one removed at Argyle with no webhook
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.remove(ACCOUNT, docs[7]["id"])
    argyle.list_requests.clear()
    # When an operator's re-sync runs
    outcome = deliver(sync, ResyncRequest(account=ACCOUNT, user=USER, request_id="resync-0001").body())
    drain(sync, queue)
    # Then it was listed in windows (cut where the stored activities lie) and its sweep removed
    # the activity Argyle no longer has
    assert len(listed_ranges(argyle)) == WINDOWS
    assert outcome["removed"] == 1
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_resync_cuts_its_windows_evenly_where_the_stored_activities_lie():
    # Given 300 hourly activities synced with one undated activity, which Argyle then removed
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    undated = make_activity(ACCOUNT, 900, updated=argyle.tick())
    undated["start_date"] = None
    argyle.accounts[ACCOUNT][undated["id"]] = undated
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    assert undated["id"] in activities.live(ACCOUNT)
    argyle.remove(ACCOUNT, undated["id"])
    argyle.list_requests.clear()
    # When an operator's re-sync runs (its request names no range: the store says where they are)
    outcome = deliver(sync, ResyncRequest(account=ACCOUNT, user=USER, request_id="resync-0002").body())
    drain(sync, queue)
    # Then its windows split the stored activities' span evenly (the undated one has no place in
    # it), each listing about a quarter of the account rather than one window listing them all
    per_window = [len(argyle._matching(ACCOUNT, f, t)) for f, t in listed_ranges(argyle)]
    assert len(per_window) == WINDOWS and sum(per_window) == 300
    assert all(abs(n - 300 // WINDOWS) <= 1 for n in per_window)
    # And its sweep removed the undated activity Argyle no longer has
    assert outcome["removed"] == 1 and activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


# --- the reconciler's full pass --------------------------------------------------------------------

def reconcile_full(sync: ActivitySync, request_id: str, remaining: int = PLENTY) -> dict[str, Any]:
    return deliver(sync, ReconcileJob(account=ACCOUNT, user=USER, request_id=request_id, scope="full").body(),
                   remaining)


def test_a_large_full_reconcile_is_listed_in_windows_and_repairs_every_kind_of_drift():
    # Given 300 synced activities, then at Argyle one removed, one added and one updated with no webhook
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.remove(ACCOUNT, docs[10]["id"])
    argyle.add_dated(ACCOUNT, 7000, BASE_TIME + timedelta(hours=120, minutes=1))
    argyle.update(ACCOUNT, docs[200]["id"], tips="7.77")
    argyle.list_requests.clear()
    # When the weekly full pass runs
    outcome = reconcile_full(sync, "reconcile-full-1")
    # Then it listed 4 windows at once and repaired all three
    assert len(listed_ranges(argyle)) == WINDOWS
    assert outcome["drift"] == {"missing": 1, "extra": 1, "stale": 1}
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT) and queue.sent == []
    assert not window_threads()


def test_a_full_reconcile_in_windows_short_of_time_continues_on_every_windows_cursor():
    # Given 300 synced activities, 3 removed at Argyle with no webhook
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    for i in (5, 105, 205):
        argyle.remove(ACCOUNT, docs[i]["id"])
    # When the full pass runs in invocations always short of time (one page per window each)
    started = reconcile_full(sync, "reconcile-full-2", remaining=1)  # its first step: the stage
    listed = deliver_queued(sync, queue, remaining=1)
    # Then the first listing part wrote one page per window and handed on every window's cursor
    assert started["pages"] == 0 and listed["action"] == "continued" and listed["pages"] == WINDOWS
    job = parse_message(message_from_sqs_record(record_for(queue.sent[0]))).data
    assert isinstance(job, ReconcileJob) and len(job.windows) == WINDOWS
    assert all(w.cursor == {"offset": str(PAGE)} for w in job.windows)
    outcomes = drain(sync, queue, remaining=1)
    # And it ends exact, the three removals found, with every row listed once
    assert outcomes[-1]["drift"]["extra"] == 3
    assert listed["pages"] + sum(o["pages"] for o in outcomes) <= 297 // PAGE + WINDOWS
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_full_reconcile_whose_window_argyle_fails_hands_every_window_on_and_counts_every_call():
    # Given 300 synced activities, 3 removed at Argyle with no webhook, and a full pass that has
    # staged and written one page per window in two short invocations
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, state = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    for i in (5, 105, 205):
        argyle.remove(ACCOUNT, docs[i]["id"])
    calls_before = argyle.calls
    reconcile_full(sync, "reconcile-full-3", remaining=1)
    assert deliver_queued(sync, queue, remaining=1)["pages"] == WINDOWS
    # When Argyle gives out on one window's next page while the others write theirs
    argyle.fail_next = [unavailable()]
    handed_on = deliver_queued(sync, queue)
    # Then the part ends without failing the record: every window goes on from its own cursor
    assert handed_on["action"] == "continued" and handed_on["argyle_gave_out"] is True
    assert handed_on["pages"] >= WINDOWS - 1 and len(queue.sent) == 1
    # And the pass ends exact, its record counting every Argyle call the reconcile made in all its parts
    outcomes = drain(sync, queue)
    assert outcomes[-1]["drift"]["extra"] == 3 and activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["last_reconcile"]["argyle_calls"] == argyle.calls - calls_before


def test_a_full_reconcile_part_whose_every_window_argyle_fails_fails_the_record_to_be_retried():
    # Given a full pass in windows that wrote one page per window in its last (short) invocation
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.remove(ACCOUNT, docs[7]["id"])
    reconcile_full(sync, "reconcile-full-4", remaining=1)
    assert deliver_queued(sync, queue, remaining=1)["pages"] == WINDOWS
    next_part = queue.sent[0]
    # When Argyle gives out on every window's next page
    argyle.fail_next = [unavailable() for _ in range(WINDOWS)]
    with pytest.raises(ArgyleUnavailable):
        deliver_queued(sync, queue)
    # Then nothing was handed on (SQS retries the record), and its retry finishes the pass exactly
    assert queue.sent == [] and argyle.fail_next == [] and not window_threads()
    queue.sent.append(next_part)
    assert drain(sync, queue)[-1]["drift"]["extra"] == 1
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_full_reconcile_of_a_large_account_of_which_one_activity_is_stored_stores_all_the_rest():
    # Given an account of which one activity is stored, and 299 more at Argyle whose webhooks never came
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 1)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.add(ACCOUNT, 299, first=1)
    # When the weekly full pass runs (the one stored start gives no span to cut windows in)
    outcome = reconcile_full(sync, "reconcile-full-5")
    # Then it lists the account and stores the 299 missing ones
    assert outcome["completed"] and queue.sent == []
    assert outcome["drift"] == {"missing": 299, "extra": 0, "stale": 0}
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_full_reconcile_in_windows_with_exactly_the_margin_left_lists_each_window_in_one_go():
    # Given 300 synced activities (4 windows of 3 pages), one since removed at Argyle with no webhook
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    argyle.remove(ACCOUNT, docs[50]["id"])
    argyle.list_requests.clear()
    # When the weekly full pass runs with exactly the margin left
    outcome = reconcile_full(sync, "reconcile-full-6", remaining=sync.ctx.options.continuation_margin_ms)
    # Then it was not short of time: each window was one listing to its end (its next page fetched
    # while the current one was written), and the pass finished here, exact
    assert len(argyle.list_requests) == WINDOWS
    assert outcome["completed"] and queue.sent == [] and outcome["drift"]["extra"] == 1
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_full_reconcile_whose_windows_reach_the_clients_page_cap_goes_on_and_reports_every_page():
    # Given 300 synced activities (4 windows of 3 pages), one since removed at Argyle with no
    # webhook, and a client that lists at most 2 pages a call
    argyle, activities = CappedArgyle(2, page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    drain(sync, queue)
    argyle.remove(ACCOUNT, docs[50]["id"])
    # When the weekly full pass runs with plenty of time
    outcome = reconcile_full(sync, "reconcile-full-7")
    # Then every window went on from its cursor in the same invocation, and the outcome reports
    # all 12 pages it listed, not only the last call's
    assert outcome["completed"] and queue.sent == [] and outcome["pages"] == 12
    assert outcome["drift"]["extra"] == 1 and activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_full_reconcile_in_windows_whose_last_pages_come_back_empty_does_not_ask_for_the_account():
    # Given 300 synced activities (4 windows of 3 pages), a full pass in windows that wrote one page
    # per window in short invocations, and then the rest of every window removed at Argyle
    argyle, activities = SharedArgyle(page_limit=PAGE), LockedActivities()
    docs = argyle.add(ACCOUNT, 300)
    sync, queue, _ = make_sync(argyle, activities)
    deliver(sync, fully_synced(docs))
    reconcile_full(sync, "reconcile-full-8", remaining=1)
    assert deliver_queued(sync, queue, remaining=1)["pages"] == WINDOWS
    job = parse_message(message_from_sqs_record(record_for(queue.sent[0]))).data
    assert isinstance(job, ReconcileJob)
    listed = {
        d["id"] for w in job.windows for d in argyle._matching(ACCOUNT, w.from_start_date, w.to_start_date)[:PAGE]
    }
    for doc in docs:
        if doc["id"] not in listed:
            argyle.remove(ACCOUNT, doc["id"])
    looked_up: list[str] = []
    get_account = argyle.get_account

    def recording_get_account(account_id: str) -> dict[str, Any]:
        looked_up.append(account_id)
        return get_account(account_id)

    argyle.get_account = recording_get_account  # type: ignore[method-assign]
    # When the pass goes on, every window's next page coming back empty
    outcomes = drain(sync, queue)
    # Then it removed the 200 others without asking Argyle whether the account still exists (its
    # windows listed activities in an earlier part), and queued no purge
    assert looked_up == [] and outcomes[-1]["purge_queued"] is False
    assert outcomes[-1]["drift"]["extra"] == 200 and activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
