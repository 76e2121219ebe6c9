"""Reconciliation: find where the stored copy differs from Argyle, and repair only that.

Why: an offset-paginated listing can skip an activity when Argyle changes under it, and Argyle
sometimes never sends a webhook. Nothing but a comparison with Argyle's API reveals either.

How (docs/sync.md, "Reconciliation"), in stages, each resumable in a new message of the
account's group (`ReconcileJob`, like a listing's continuation):
- recent: re-list the last `reconcile_recent_days` through the monotonic path (content drift:
  a missed activities.updated; tips and adjustments land there).
- count: Argyle's `count` for the whole account and for its dated activities (2 calls) against the
  stored keys (one read of the keys-only index). Equal: done. Undated activities differ (no date
  filter can isolate them): re-list the whole account. Dated ones differ: bisect.
- bisect: a window whose counts differ is split at the stored median start (two halves of the
  stored keys) and Argyle counts the left half (1 call; the right is the rest), until Argyle counts
  at most a page in it; that window is listed: missing activities are written, stored ones Argyle
  did not list are checked one by one (404: removed; 200: written, it moved). One drifted activity
  in N costs about log2(N/200) + 3 calls. A window with so much drift that bisecting it would cost
  more calls than its pages (d * log2(pages) >= pages) is listed outright instead.
- full: re-list the whole account with a marker, then check every live stored activity the listing
  did not mark (a re-sync); chosen by scope (weekly), or when Argyle's response has no `count`
  (API v2's lists have none: every reconcile of a v2 stack is a full pass, from the start).
- gone: when Argyle lists nothing for an account, it is asked for the account itself; a 404
  means the worker revoked access and its accounts.removed never reached us: a purge is queued
  (sync/purge.py), exactly as that webhook would have.
Counts that agree cannot prove the sets agree (one missing and one extra cancel out): the weekly
full pass is what closes that gap.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from argyle_pipeline.argyle.client import AccountNotFound, ArgyleUnavailable
from argyle_pipeline.aws.event_queue import QueuedEvent
from argyle_pipeline.sync.context import SyncContext
from argyle_pipeline.sync.listing_windows import list_windows, plan_windows
from argyle_pipeline.sync.messages import (
    ACCOUNTS_REMOVED,
    PURGE_EVENT,
    RECONCILE_EVENT,
    PurgeJob,
    ReconcileJob,
    SyncMessage,
    Window,
)
from argyle_pipeline.sync.outcome import SyncOutcome
from argyle_pipeline.sync.ports import UNDATED_KEY, StoredKey, UpsertResult
from argyle_pipeline.timestamps import EARLIEST, LATEST, iso_seconds, parse_timestamp

DRIFT_KINDS = ("missing", "extra", "stale")


@dataclass
class _StoredIndex:
    """The account's live stored keys, as the bisection reads them: dated ones by start second."""

    seconds: list[int]
    ids: list[str]
    undated: int

    @classmethod
    def of(cls, keys: list[StoredKey]) -> _StoredIndex:
        dated = sorted((int(parse_timestamp(k.start_key).timestamp()), k.activity_id)
                       for k in keys if k.start_key != UNDATED_KEY)
        return cls([s for s, _ in dated], [i for _, i in dated], len(keys) - len(dated))

    def span(self, window: Window) -> tuple[int, int]:
        return bisect_left(self.seconds, window.first), bisect_right(self.seconds, window.last)

    def count(self, window: Window) -> int:
        lo, hi = self.span(window)
        return hi - lo


class Reconciler:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def run(self, job: ReconcileJob, message: SyncMessage, remaining_ms: Callable[[], int],
            outcome: SyncOutcome | None = None) -> SyncOutcome:
        ctx = self.ctx
        outcome = outcome or SyncOutcome(RECONCILE_EVENT, part=job.part)
        calls_before = ctx.argyle_calls
        run = _Run(self, job, outcome, message, remaining_ms)
        stepped = False  # each invocation makes one step at least, however little time is left
        progressed = False  # a step that asked Argyle something has completed in this invocation
        while job.stage != "done":
            if stepped and remaining_ms() < ctx.options.continuation_margin_ms:
                job.argyle_calls += ctx.argyle_calls - calls_before
                return self._continue(job, message, outcome)
            stepped = True
            before, calls_at_step = job.model_copy(deep=True), ctx.argyle_calls
            try:
                run.step()
            except _WindowsHandedOn:
                # Argyle gave out in a window after others wrote pages: every window's cursor goes on.
                job.argyle_calls += ctx.argyle_calls - calls_before
                outcome.argyle_gave_out = True
                return self._continue(job, message, outcome)
            except ArgyleUnavailable:
                if not progressed:
                    raise  # nothing done here: the record fails and comes back with its own state
                # Argyle gave out mid-way: hand on the state before the failed step, not a restart.
                before.argyle_calls += ctx.argyle_calls - calls_before
                # What the failed step repaired is written and stays counted: its redo finds it stored.
                before.drift = dict(job.drift)
                outcome.argyle_gave_out = True
                return self._continue(before, message, outcome)
            progressed = progressed or ctx.argyle_calls > calls_at_step
        job.argyle_calls += ctx.argyle_calls - calls_before
        drift = {kind: job.drift.get(kind, 0) for kind in DRIFT_KINDS}
        ctx.state.record_reconcile(job.account, job.user, ctx.now(), scope=job.scope, drift=drift,
                                   argyle_calls=job.argyle_calls)
        outcome.drift = drift
        outcome.completed = True
        outcome.exact = not outcome.purge_queued  # every drift found was repaired in this pass
        if job.argyle_total is not None and job.stored_total is not None:
            outcome.counts = {"argyle_count": job.argyle_total,
                              "stored_live": job.stored_total + drift["missing"] - drift["extra"]}
        return outcome

    def _continue(self, job: ReconcileJob, message: SyncMessage, outcome: SyncOutcome) -> SyncOutcome:
        following = job.model_copy(update={"part": job.part + 1})
        self.ctx.continuations.send(QueuedEvent(
            body=following.body(), event_name=RECONCILE_EVENT,
            group_id=message.group_id or f"account:{job.account}", dedupe_key=following.idempotency_key,
            correlation_id=message.correlation_id, received_at_ms=message.received_at_ms))
        outcome.action = "continued"
        outcome.continuation_part = following.part
        return outcome


class _WindowsHandedOn(Exception):
    """A windowed full pass stopped because Argyle gave out in a window after pages were written."""


class _Run:
    """One invocation's share of a reconcile: `step()` does one bounded unit of the current stage."""

    def __init__(self, reconciler: Reconciler, job: ReconcileJob, outcome: SyncOutcome,
                 message: SyncMessage, remaining_ms: Callable[[], int]) -> None:
        self.ctx = reconciler.ctx
        self.job = job
        self.outcome = outcome
        self.message = message
        self.remaining_ms = remaining_ms
        self._index: _StoredIndex | None = None

    @property
    def index(self) -> _StoredIndex:
        if self._index is None:
            self._index = _StoredIndex.of(self.ctx.activities.stored_keys(self.job.account))
        return self._index

    def step(self) -> None:
        stage = self.job.stage
        if stage == "start":
            self.job.stage = "count" if self.job.scope == "counts" else self.job.scope
            if not self.ctx.options.api.list_counts:
                # No counts to compare (API v2): a recent pass and a count stage would end in a
                # full pass anyway, after wasted calls.
                self.job.stage = "full"
        elif stage == "full" and self._windowed():
            self._list_windows()
        elif stage in ("recent", "full"):
            self._list_one_page()
        elif stage == "sweep":
            self._sweep()
        elif stage == "count":
            self._count()
        elif stage == "bisect":
            self._bisect_one()

    # --- stages ---------------------------------------------------------------------------------

    def _list_one_page(self) -> None:
        job, ctx = self.job, self.ctx
        full = job.stage == "full"
        days = job.recent_days if job.recent_days is not None else ctx.options.reconcile_recent_days
        start = None if full else iso_seconds(int(ctx.clock()) - days * 86_400)
        pages = ctx.argyle.list_activity_pages(job.account, start, None, cursor=dict(job.cursor) or None)
        try:
            page = next(iter(pages))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        self._note(ctx.activities.upsert_many(page.activities, ctx.now(),
                                              resync_marker=self._marker if full else None))
        self.outcome.pages += 1
        if full:
            job.full_rows += len(page.activities)
        if page.next_cursor:
            job.cursor = dict(page.next_cursor)
            return
        job.cursor = {}
        job.stage = "sweep" if full else "count"

    def _windowed(self) -> bool:
        """Whether this full pass is listed as start-date windows at once (planned at its start,
        as a listing's: above the threshold, with counts, no undated activity)."""
        job, ctx = self.job, self.ctx
        if job.windows:
            return True
        if job.cursor or job.full_rows:
            return False  # a sequential pass already under way
        def stored_span() -> tuple[int, int] | None:
            seconds = self.index.seconds  # read only when the pass is large enough to split
            return (seconds[0], seconds[-1]) if seconds else None

        plan = plan_windows(job.account, None, None, known_count=None, argyle=ctx.argyle,
                            k=min(ctx.options.listing_windows, len(ctx.fetchers)),
                            threshold=ctx.options.window_threshold, list_counts=ctx.options.api.list_counts,
                            span_hint=stored_span)
        if plan is None:
            return False
        job.windows = plan.windows
        return True

    def _list_windows(self) -> None:
        """Every unfinished window at once until they end or the invocation is short of time."""
        job, ctx = self.job, self.ctx

        def written(result: UpsertResult, rows: int) -> None:
            self._note(result)
            job.full_rows += rows

        run = list_windows(job.account, job.windows, clients=ctx.fetchers, store=ctx.activities, now=ctx.now,
                           marker=self._marker, on_written=written,
                           out_of_time=lambda: self.remaining_ms() < ctx.options.continuation_margin_ms)
        self.outcome.pages += run.pages
        if all(w.done for w in job.windows):
            job.windows, job.cursor, job.stage = [], {}, "sweep"
            return
        if run.unavailable is not None:
            if run.pages == 0:
                raise run.unavailable  # as a page that failed: the reconcile's own rules apply
            raise _WindowsHandedOn

    @property
    def _marker(self) -> str:
        return f"reconcile-{self.job.request_id}"

    def _sweep(self) -> None:
        """After a full listing: a live stored activity it did not mark is gone at Argyle, or was
        written by an event between the listing's parts; one GET each tells which."""
        ctx, job = self.ctx, self.job
        candidates = ctx.activities.live_ids_not_marked(job.account, self._marker)
        if not (job.full_rows == 0 and self._account_gone()):
            self._check_stored(candidates, resync_marker=self._marker)
        job.stage = "done"

    def _count(self) -> None:
        ctx, job = self.ctx, self.job
        total = ctx.argyle.count_activities(job.account)
        dated = ctx.argyle.count_activities(job.account, iso_seconds(EARLIEST), iso_seconds(LATEST))
        job.argyle_total, job.stored_total = total, len(self.index.seconds) + self.index.undated
        if total == 0 and self._account_gone():
            job.stage = "done"
            return
        if total is None or dated is None or total - dated != self.index.undated:
            # Without counts, or when the undated activities differ (no filter isolates them): a
            # full pass is the only exact comparison.
            job.stage = "full"
            return
        if dated == len(self.index.seconds):
            job.stage = "done"
            return
        job.pending = [Window(first=EARLIEST, last=LATEST, argyle_count=dated)]
        job.stage = "bisect"

    def _bisect_one(self) -> None:
        job = self.job
        if not job.pending:
            job.stage = "done"
            return
        window = job.pending.pop()
        stored = self.index.count(window)
        if stored == window.argyle_count:
            return
        pages = math.ceil(window.argyle_count / self.ctx.options.page_limit)
        # Bisecting costs about one count per level for each differing activity; listing the window
        # costs its pages. Much drift in one window (50 of 10,000): listing it is cheaper.
        bisect_cost = abs(window.argyle_count - stored) * max(1.0, math.log2(max(pages, 1)))
        if pages <= 1 or window.first >= window.last or bisect_cost >= pages:
            self._repair(window)
            return
        middle = self._split_point(window, stored)
        left = self.ctx.argyle.count_activities(job.account, iso_seconds(window.first), iso_seconds(middle))
        if left is None:
            self._repair(window)
            return
        # Depth first, left half first; the right half's count is the rest of the window's.
        job.pending.append(Window(first=middle + 1, last=window.last,
                                  argyle_count=max(0, window.argyle_count - left)))
        job.pending.append(Window(first=window.first, last=middle, argyle_count=left))

    def _split_point(self, window: Window, stored: int) -> int:
        """The stored median start when the stored keys describe the window (two halves of about
        equal size); the time midpoint when most of Argyle's activities are missing here."""
        if stored >= 2 and 2 * stored >= window.argyle_count:
            lo, _ = self.index.span(window)
            middle = self.index.seconds[lo + (stored - 1) // 2]
        else:
            middle = window.first + (window.last - window.first) // 2
        return min(max(middle, window.first), window.last - 1)

    def _account_gone(self) -> bool:
        """Argyle lists nothing for an account we hold: is the account itself gone (revoked, and
        its accounts.removed lost)? Then a purge is queued in the account's group, as that webhook
        would have started one."""
        job, ctx = self.job, self.ctx
        try:
            ctx.argyle.get_account(job.account)
        except AccountNotFound:
            purge = PurgeJob(account=job.account, user=job.user, request_id=f"reconcile-{job.request_id}",
                             reason=ACCOUNTS_REMOVED, removed_received_at_ms=self.message.received_at_ms)
            ctx.continuations.send(QueuedEvent(
                body=purge.body(), event_name=PURGE_EVENT,
                group_id=self.message.group_id or f"account:{job.account}", dedupe_key=purge.idempotency_key,
                correlation_id=self.message.correlation_id, received_at_ms=self.message.received_at_ms))
            self.outcome.purge_queued = True
            return True
        return False

    # --- repairs --------------------------------------------------------------------------------

    def _repair(self, window: Window) -> None:
        """List the window from Argyle; write what it lists; check what is stored but not listed."""
        ctx, job = self.ctx, self.job
        listed: set[str] = set()
        pages = ctx.argyle.list_activity_pages(job.account, iso_seconds(window.first), iso_seconds(window.last))
        for page in pages:
            self.outcome.pages += 1
            listed.update(a.id for a in page.activities)
            self._note(ctx.activities.upsert_many(page.activities, ctx.now()))
        lo, hi = self.index.span(window)
        self._check_stored([i for i in self.index.ids[lo:hi] if i not in listed])

    def _check_stored(self, ids: list[str], resync_marker: str | None = None) -> None:
        ctx = self.ctx
        gone: list[str] = []
        for activity_id, activity in ctx.fetch_current(ids):
            if activity is None:
                gone.append(activity_id)
            else:  # still at Argyle (its start moved, or the listing shifted under us)
                self.outcome.fetched += 1
                self._note(ctx.activities.upsert_many([activity], ctx.now(), resync_marker=resync_marker))
        if gone:
            removed = ctx.activities.remove(self.job.account, gone, ctx.now())
            self.outcome.removed += removed
            self._add("extra", removed)

    def _note(self, result: UpsertResult) -> None:
        self.outcome.add(result)
        self._add("missing", result.created)
        self._add("stale", result.changed)

    def _add(self, kind: str, n: int) -> None:
        if n:
            self.job.drift[kind] = self.job.drift.get(kind, 0) + n
