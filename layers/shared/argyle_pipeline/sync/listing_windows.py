"""A large listing as K disjoint start-date windows, listed at once within one invocation.

Why threads in one invocation: every message of an account's FIFO group runs one at a time, so
parallel messages cannot list one account faster; K windows listed by K threads can (each page is
an Argyle round trip, and the windows' round trips overlap). Each window has its own Argyle client
(a client is not shared between threads) and all of them take from the stack's shared request
budget, so a 429 slows every window.

Planning (`plan_windows`): only a `*_synced` or re-sync listing above the threshold (the
webhook's `available_count`, else Argyle's `count`) on an API whose lists carry `count` (v1). For
the whole account, Argyle counts the account and its dated activities (2 calls): an undated
activity matches no date filter, so when the two differ the listing stays sequential (the only
listing that sees undated activities is the unfiltered one). v2 documents no `count`: its large
listings stay sequential (exact; its keyset pages do not shift under change anyway).

Listing (`list_windows`): each window fetches its next page while it writes the current one
(`PagePrefetch`, two pages at most per window), does at least one page per invocation, then stops when the
invocation runs short of time, when another window asked to stop, or at its end; its cursor only
advances after its page is written, so a continuation carries every window's exact cursor. An
error in one window stops the others after their current page; every thread is joined before the
error is raised, and the record fails with its message's cursors, as a sequential listing does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from argyle_pipeline.argyle.client import ArgyleUnavailable, PageLimitExceeded
from argyle_pipeline.sync.messages import ListingWindow
from argyle_pipeline.sync.page_prefetch import PagePrefetch
from argyle_pipeline.sync.ports import UNDATED_KEY, ActivitySource, ActivityWriter, StoredKey, UpsertResult
from argyle_pipeline.timestamps import EARLIEST, LATEST, iso_seconds, parse_timestamp


def split_start_range(low: int, high: int, k: int) -> list[tuple[int, int]]:
    """[low, high] (epoch seconds, inclusive) as up to k disjoint, adjacent, inclusive windows
    that cover it exactly; fewer when the range has fewer seconds than k."""
    k = max(1, min(k, high - low + 1))
    cuts = [low + (high - low + 1) * i // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1] - 1) for i in range(k)]


def window_ranges(span: tuple[int, int], k: int, outer: tuple[int, int]) -> list[tuple[int, int]]:
    """Windows whose inner cuts split `span` evenly and whose outer edges reach `outer`, so that
    together they cover `outer` exactly (an activity before or after `span` still has a window)."""
    low, high = max(span[0], outer[0]), min(span[1], outer[1])
    if high <= low:
        return [outer]
    parts = split_start_range(low, high, k)
    parts[0] = (outer[0], parts[0][1])
    parts[-1] = (parts[-1][0], outer[1])
    return parts


def stored_span(keys: Sequence[StoredKey]) -> tuple[int, int] | None:
    """The first and last start (epoch seconds) of the stored dated activities, if any."""
    starts = [int(parse_timestamp(k.start_key).timestamp()) for k in keys if k.start_key != UNDATED_KEY]
    return (min(starts), max(starts)) if starts else None


@dataclass
class WindowPlan:
    windows: list[ListingWindow]
    dated_count: int | None  # Argyle's count of what the windows cover, when it was asked


def plan_windows(account: str, from_start_date: str | None, to_start_date: str | None, *,
                 known_count: int | None, argyle: ActivitySource, k: int, threshold: int, list_counts: bool,
                 span_hint: Callable[[], tuple[int, int] | None]) -> WindowPlan | None:
    """The windows of a listing of [from_start_date, to_start_date] (both None: the whole
    account), or None to list it as one sequence. `known_count`: the webhook's available_count.
    `span_hint` gives the range to cut evenly (where the account's activities are)."""
    if k < 2 or not list_counts:
        return None
    if known_count is not None and known_count <= threshold:
        return None  # small: no count call spent on deciding
    whole = not (from_start_date or to_start_date)
    if whole:
        total = argyle.count_activities(account)
        if total is None or total <= threshold:
            return None
        dated = argyle.count_activities(account, iso_seconds(EARLIEST), iso_seconds(LATEST))
        if dated is None or dated != total:
            return None  # undated activities (or a change right now): only the whole listing sees them
        outer = (EARLIEST, LATEST)
    elif from_start_date and to_start_date:
        outer = (int(parse_timestamp(from_start_date).timestamp()), int(parse_timestamp(to_start_date).timestamp()))
        if known_count is None:
            counted = argyle.count_activities(account, from_start_date, to_start_date)
            if counted is None or counted <= threshold:
                return None
        dated = None
    else:
        return None  # half-open ranges come only from `added`, which is never split
    span = span_hint() or outer
    ranges = window_ranges(span, k, outer)
    if len(ranges) < 2:
        return None
    windows = [ListingWindow(from_start_date=iso_seconds(first), to_start_date=iso_seconds(last))
               for first, last in ranges]
    if not whole:  # the caller's own bounds, exactly as given (they may carry fractions of a second)
        windows[0].from_start_date, windows[-1].to_start_date = from_start_date, to_start_date
    return WindowPlan(windows, dated)


def origin_span(origin: dict[str, Any]) -> tuple[int, int] | None:
    """The webhook's available_from / available_to, as epoch seconds, when it gave both."""
    if origin.get("available_from") and origin.get("available_to"):
        return (int(parse_timestamp(origin["available_from"]).timestamp()),
                int(parse_timestamp(origin["available_to"]).timestamp()))
    return None


@dataclass
class WindowsRun:
    """What one invocation's windows did."""

    pages: int = 0
    # Argyle stayed unavailable in some window: the rest goes on in a new part (or, when no page
    # was written at all, this is raised and the record fails).
    unavailable: ArgyleUnavailable | None = None
    errors: list[BaseException] = field(default_factory=list)


def note_counts(counts: dict[str, Any], count: int | None, rows: int) -> None:
    """Keep, across the listing's parts, Argyle's first and last `count` and the rows listed."""
    counts["rows_listed"] = int(counts.get("rows_listed") or 0) + rows
    if count is None:
        return
    counts.setdefault("first_count", count)
    counts["last_count"] = count
    if count != counts["first_count"]:
        counts["count_moved"] = True


def counts_shifted(counts: dict[str, Any]) -> bool:
    """Whether Argyle's data moved under a listing: its count changed between pages, or the rows
    listed do not add up to it (offset pages skip or repeat rows when earlier ones change)."""
    if counts.get("count_moved"):
        return True
    last = counts.get("last_count")
    return last is not None and int(counts.get("rows_listed") or 0) != int(last)


def list_windows(account: str, windows: Sequence[ListingWindow], *, clients: Sequence[ActivitySource],
                 store: ActivityWriter, now: Callable[[], str], marker: str | None,
                 on_written: Callable[[UpsertResult, int], None], out_of_time: Callable[[], bool]) -> WindowsRun:
    """List every unfinished window at once, one thread and one client each, writing each page as
    it comes (`on_written(result, rows)` is called for each page, one call at a time). Updates each
    window's cursor, counts and `done` in place. Raises the first error other than Argyle giving
    out, after every thread has ended."""
    pending = [w for w in windows if not w.done]
    if len(clients) < len(pending):
        raise ValueError(f"{len(pending)} windows need as many Argyle clients, got {len(clients)}")
    run = WindowsRun()
    stop = threading.Event()
    lock = threading.Lock()

    def list_pages(window: ListingWindow, prefetch: PagePrefetch) -> None:
        wrote = False
        # At least one page per invocation, so every window progresses however short the time.
        while not wrote or not stop.is_set():
            try:
                page = prefetch.take()
            except ArgyleUnavailable as exc:
                with lock:
                    run.unavailable = run.unavailable or exc
                stop.set()
                return
            except PageLimitExceeded as exc:
                if not exc.next_cursor:
                    raise
                window.cursor = dict(exc.next_cursor)  # the client's cap: a new part goes on
                return
            if page is None:
                window.done, window.cursor = True, {}
                return
            if page.next_cursor and not stop.is_set() and not out_of_time():
                prefetch.start_next()  # this window's next page comes while this one is written
            result = store.upsert_many(page.activities, now(), resync_marker=marker)
            wrote = True
            note_counts(window.counts, page.count, len(page.activities))
            with lock:
                on_written(result, len(page.activities))
                run.pages += 1
            if not page.next_cursor:
                window.done, window.cursor = True, {}
                return
            window.cursor = dict(page.next_cursor)  # only now: the page before it is written
            if out_of_time():
                stop.set()
                return

    def list_one(window: ListingWindow, client: ActivitySource) -> None:
        try:
            pages = client.list_activity_pages(account, window.from_start_date, window.to_start_date,
                                               cursor=dict(window.cursor) or None)
            # On an error the other windows are stopped first; the prefetch's close then waits for
            # its fetch in flight.
            with PagePrefetch(pages) as prefetch, _stop_on_error(stop):
                list_pages(window, prefetch)
        except BaseException as exc:  # re-raised in the caller's thread, after every thread ended
            with lock:
                run.errors.append(exc)
            stop.set()

    pool = ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="argyle-window")
    try:
        for window, client in zip(pending, clients, strict=False):
            pool.submit(list_one, window, client)  # list_one keeps every error it meets in run.errors
    finally:
        pool.shutdown(wait=True)  # no window's thread outlives the invocation's handling
    if run.errors:
        raise run.errors[0]
    return run


@contextmanager
def _stop_on_error(stop: threading.Event) -> Iterator[None]:
    try:
        yield
    except BaseException:
        stop.set()
        raise
