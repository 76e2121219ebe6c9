"""A listing fetches page k+1 while page k is written (sync/page_prefetch.py), holds at most two
pages, fails cleanly from either side, and hands the rest of a listing on from its exact cursor
when Argyle gives out mid-way."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from argyle_pipeline.argyle.client import ArgyleClientError, ArgyleUnavailable
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.messages import Continuation, SyncMessage, message_from_sqs_record, parse_message
from argyle_pipeline.sync.page_prefetch import PagePrefetch
from argyle_pipeline.sync.ports import UpsertResult
from tests.support.fake_argyle import FakeArgyle, range_of, unavailable, webhook_body
from tests.support.lambda_events import record_for
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9
WAIT_S = 10.0  # the deadline of every wait below: a broken prefetch fails, it never hangs


class PausingArgyle(FakeArgyle):
    """Tells when each listing request starts, and can hold one until released."""

    def __init__(self, page_limit: int) -> None:
        super().__init__(page_limit=page_limit)
        self.started: list[threading.Event] = [threading.Event() for _ in range(20)]
        self.release: dict[int, threading.Event] = {}
        self.threads: set[str] = set()

    def _call(self) -> None:
        index = self.calls
        self.threads.add(threading.current_thread().name)
        self.started[index].set()
        gate = self.release.get(index)
        if gate is not None and not gate.wait(WAIT_S):
            raise AssertionError(f"request {index} was never released")
        super()._call()


class WatchedActivities(MemoryActivities):
    """Writes that can wait for a listing request to start, or fail on a chosen page."""

    def __init__(self) -> None:
        super().__init__()
        self.before_write: dict[int, Any] = {}

    def upsert_many(self, activities: Sequence[Any], synced_at: str, *,
                    resync_marker: str | None = None) -> UpsertResult:
        hook = self.before_write.get(len(self.upsert_many_calls))
        if hook is not None:
            hook()
        return super().upsert_many(activities, synced_at, resync_marker=resync_marker)


def make_sync(argyle: FakeArgyle, activities: MemoryActivities) -> tuple[ActivitySync, MemoryQueue, MemoryState]:
    queue, state = MemoryQueue(), MemoryState()
    return ActivitySync(argyle, activities, state, queue, SyncOptions()), queue, state


def deliver(sync: ActivitySync, body: bytes) -> dict[str, Any]:
    message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="corr", received_at_ms=1)
    return sync.process(message, parse_message(message), lambda: PLENTY).as_dict()


def deliver_queued(sync: ActivitySync, queue: MemoryQueue) -> dict[str, Any]:
    message = message_from_sqs_record(record_for(queue.sent.pop(0)))
    return sync.process(message, parse_message(message), lambda: PLENTY).as_dict()


def fully_synced(docs: list[dict[str, Any]]) -> bytes:
    start, end = range_of(docs)
    return webhook_body("activities.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                        available_to=end, available_count=len(docs))


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("argyle-prefetch")]


def test_the_next_page_is_fetched_while_the_current_one_is_written():
    # Given 3 pages at Argyle, and a write of page 1 that waits until the request for page 2 has begun
    argyle, activities = PausingArgyle(page_limit=100), WatchedActivities()
    docs = argyle.add(ACCOUNT, 250)
    activities.before_write[0] = lambda: argyle.started[1].wait(WAIT_S) or pytest.fail("page 2 not prefetched")
    sync, _, _ = make_sync(argyle, activities)
    # When the listing runs
    outcome = deliver(sync, fully_synced(docs))
    # Then page 2 was requested during page 1's write (else the write above fails), from another
    # thread, and the copy is exact
    assert outcome["pages"] == 3 and activities.upsert_many_calls == [100, 100, 50]
    assert any(name.startswith("argyle-prefetch") for name in argyle.threads)
    assert argyle.calls == 3  # no request beyond the last page
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert not prefetch_threads()


def test_at_most_two_pages_are_held_the_next_fetch_waits_for_the_write():
    # Given a write of page 1 that records which requests had begun when it ended
    argyle, activities = PausingArgyle(page_limit=100), WatchedActivities()
    docs = argyle.add(ACCOUNT, 300)
    seen: list[int] = []
    activities.before_write[0] = lambda: (argyle.started[1].wait(WAIT_S), seen.append(argyle.calls))
    sync, _, _ = make_sync(argyle, activities)
    # When the listing runs
    deliver(sync, fully_synced(docs))
    # Then when page 1 was being written only pages 1 and 2 had been requested (page 3 waits for
    # page 2 to be taken, i.e. for page 1's write to end)
    assert seen == [2]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)


def test_a_write_failing_while_the_next_page_is_pending_fails_cleanly():
    # Given page 2's request held in flight while page 1's write fails
    argyle, activities = PausingArgyle(page_limit=100), WatchedActivities()
    docs = argyle.add(ACCOUNT, 300)
    argyle.release[1] = threading.Event()

    def fail_write() -> None:
        assert argyle.started[1].wait(WAIT_S), "page 2 was not prefetched"
        threading.Timer(0.05, argyle.release[1].set).start()  # page 2 answers while the record fails
        raise RuntimeError("DynamoDB write failed")

    activities.before_write[0] = fail_write
    sync, queue, state = make_sync(argyle, activities)
    # When the listing runs, the write error is the record's error
    with pytest.raises(RuntimeError, match="DynamoDB write failed"):
        deliver(sync, fully_synced(docs))
    # Then nothing was written (no page after the failed one), page 3 was never requested, no
    # continuation was queued, the account is not recorded, and no prefetch thread is left
    assert activities.upsert_many_calls == [] and activities.live(ACCOUNT) == {}
    assert argyle.calls == 2 and not argyle.started[2].is_set()
    assert queue.sent == [] and ACCOUNT not in state.accounts
    assert not prefetch_threads()


def test_a_prefetch_failing_while_a_page_is_written_fails_the_record_after_that_page():
    # Given Argyle refusing the request for page 2 (a 4xx: not transient, no hand-on)
    argyle, activities = PausingArgyle(page_limit=100), WatchedActivities()
    docs = argyle.add(ACCOUNT, 300)
    original_call = argyle._call

    def call_then_fail() -> None:
        if argyle.calls == 1:
            argyle.fail_next = [ArgyleClientError("HTTP 400", status=400)]
        original_call()

    argyle._call = call_then_fail  # type: ignore[method-assign]
    sync, queue, state = make_sync(argyle, activities)
    # When the listing runs
    with pytest.raises(ArgyleClientError):
        deliver(sync, fully_synced(docs))
    # Then page 1 (fetched before the failure) was written, nothing after it, and nothing recorded
    assert activities.upsert_many_calls == [100]
    assert argyle.calls == 2 and queue.sent == [] and ACCOUNT not in state.accounts
    assert not prefetch_threads()


def test_argyle_giving_out_mid_listing_hands_the_rest_on_from_the_exact_cursor():
    # Given Argyle unavailable (retries exhausted) for the request of page 3 of 4
    argyle, activities = FakeArgyle(page_limit=100), MemoryActivities()
    docs = argyle.add(ACCOUNT, 350)
    original_call = argyle._call

    def call() -> None:
        if argyle.calls == 2:
            argyle.fail_next = [unavailable()]
        original_call()

    argyle._call = call  # type: ignore[method-assign]
    sync, queue, state = make_sync(argyle, activities)
    # When the webhook is processed
    first = deliver(sync, fully_synced(docs))
    # Then the record succeeds as "continued": pages 1-2 written, the rest queued from page 3's cursor
    assert first["action"] == "continued" and first["argyle_gave_out"] and first["pages"] == 2
    (queued,) = queue.sent
    continuation = parse_message(message_from_sqs_record(record_for(queued))).data
    assert isinstance(continuation, Continuation) and continuation.cursor == {"offset": "200"}
    assert ACCOUNT not in state.accounts
    # When the continuation runs (Argyle is back)
    last = deliver_queued(sync, queue)
    # Then the listing went on from page 3, never page 1 again, and the copy is exact
    assert last["action"] == "synced"
    assert [r[3] for r in argyle.list_requests] == [None, {"offset": "200"}]
    assert activities.upsert_many_calls == [100, 100, 100, 50]
    assert activities.live(ACCOUNT) == argyle.truth(ACCOUNT)
    assert state.accounts[ACCOUNT]["status"] == "fully_synced"


def test_argyle_unavailable_before_any_page_of_a_part_fails_the_record():
    # Given a continuation whose first page Argyle cannot answer
    argyle, activities = FakeArgyle(page_limit=100), MemoryActivities()
    docs = argyle.add(ACCOUNT, 350)
    original_call = argyle._call

    def call() -> None:
        if argyle.calls == 1:
            argyle.fail_next = [unavailable()]
        original_call()

    argyle._call = call  # type: ignore[method-assign]
    sync, queue, _ = make_sync(argyle, activities)
    first = deliver(sync, fully_synced(docs))
    assert first["action"] == "continued" and first["pages"] == 1
    # When the continuation runs while Argyle is still unavailable
    argyle.fail_next = [unavailable()]
    message = message_from_sqs_record(record_for(queue.sent.pop(0)))
    # Then the record fails (SQS brings it back after its retry delay, with the same cursor), and
    # no empty continuation loops on
    with pytest.raises(ArgyleUnavailable):
        sync.process(message, parse_message(message), lambda: PLENTY)
    assert queue.sent == [] and activities.upsert_many_calls == [100]
    assert not prefetch_threads()


def test_prefetch_close_waits_for_the_fetch_in_flight_and_closes_the_iterator():
    # Given a page iterator whose second fetch is slow
    release, closed = threading.Event(), threading.Event()

    def pages() -> Any:
        try:
            yield 1
            assert release.wait(WAIT_S)
            yield 2
        finally:
            closed.set()

    prefetch = PagePrefetch(pages())
    assert prefetch.take() == 1
    prefetch.start_next()
    # When it is closed while page 2 is being fetched
    threading.Timer(0.05, release.set).start()
    prefetch.close()
    # Then close returned only after the fetch ended, the iterator is closed and no thread is left
    assert release.is_set() and closed.is_set()
    assert not prefetch_threads()
    with pytest.raises(RuntimeError):
        prefetch.take()


def test_closing_a_prefetch_twice_closes_its_page_source_once():
    # Given a page source that counts how often it is closed (a connection handed back on close)
    class Source:
        def __init__(self) -> None:
            self.closes = 0

        def __iter__(self) -> Source:
            return self

        def __next__(self) -> int:
            return 1

        def close(self) -> None:
            self.closes += 1

    source = Source()
    prefetch = PagePrefetch(source)
    assert prefetch.take() == 1
    # When it is closed, then closed again (an explicit close inside its `with` block)
    prefetch.close()
    prefetch.close()
    # Then the source was closed once, and the prefetch stays closed
    assert source.closes == 1
    with pytest.raises(RuntimeError, match="prefetch is closed"):
        prefetch.start_next()
