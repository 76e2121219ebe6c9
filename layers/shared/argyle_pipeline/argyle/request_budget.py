"""One Argyle request rate for the whole stack: every call of every concurrent invocation takes a
token from a budget held in a shared store (DynamoDB in AWS: aws/argyle_budget_store.py).

Why shards: one bucket item that every Argyle call updates is a hot item (every concurrent
invocation contending on one DynamoDB item, conditional writes cancelling each other). The budget
of R requests/s is split over K bucket items, each refilling R/K per second and holding at most
one second of its share. An invocation takes from a shard chosen at random, tries another when
that one is empty or was written by someone else first, and takes a few tokens per round trip (a
lease, used within LEASE_SECONDS or dropped), so each shard item sees about R/(K x lease) writes/s.

A 429 from Argyle pauses every shard until its Retry-After, so that every invocation waits, not
only the one that got it. Waiting is bounded: when a token cannot be had before the caller's
deadline (its remaining time less a reserve), `RateBudgetExhausted` (an ArgyleUnavailable) is raised,
which a listing turns into a continuation from its cursor and any other record into a retry.

No boto3 here: the store is a port (BudgetStore).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from argyle_pipeline.argyle.client import ArgyleUnavailable

DEFAULT_SHARDS = 8
DEFAULT_LEASE = 2
# A leased token not used within this long is dropped: tokens kept longer could burst above R.
LEASE_SECONDS = 1.0
# The shortest wait: below it, float rounding of epoch seconds could leave a refill never reaching 1.
MIN_WAIT_SECONDS = 0.001
# Shards tried per round before waiting for a refill.
TRIES_PER_ROUND = 3


class RateBudgetExhausted(ArgyleUnavailable):
    """No Argyle request budget before the deadline: the work is handed on, not run into its timeout."""


@dataclass(frozen=True)
class ShardState:
    tokens: float
    refilled_at: float  # epoch seconds of the last refill
    paused_until: float = 0.0  # epoch seconds: Argyle's last Retry-After, shared by everyone
    version: int = 0  # 0: never written (a full bucket)


class BudgetStore(Protocol):
    def read_shard(self, shard: int) -> ShardState | None: ...

    def write_shard(self, shard: int, tokens: float, refilled_at: float, expected_version: int) -> bool:
        """Store tokens/refilled_at as version expected_version+1, only if the shard is still at
        expected_version. False when another invocation wrote it first."""
        ...

    def pause_shard(self, shard: int, until: float) -> None:
        """Raise the shard's paused_until to `until` (never lower it)."""
        ...


class SharedRequestBudget:
    """Thread-safe: the sync's fetching threads share one per container."""

    def __init__(self, store: BudgetStore, requests_per_second: float, *, shards: int = DEFAULT_SHARDS,
                 lease: int = DEFAULT_LEASE, max_wait_seconds: float = 60.0,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 rand: random.Random | None = None) -> None:
        if requests_per_second <= 0 or shards < 1 or lease < 1:
            raise ValueError("requests_per_second must be > 0, shards and lease at least 1")
        self._store = store
        self.shards = shards
        self.rate = requests_per_second / shards  # per shard
        self.capacity = max(1.0, self.rate)  # one second of the shard's share (at least one token)
        self.lease = lease
        self.max_wait_seconds = max_wait_seconds
        self._clock, self._sleep = clock, sleep
        self._rand = rand or random.Random()
        self._lock = threading.Lock()
        self._leased = 0
        self._leased_at = 0.0
        self._paused_until = 0.0
        self._deadline: Callable[[], float | None] = lambda: None
        self.store_calls = 0  # reads and writes of the store, for benchmarks

    def set_deadline(self, deadline: Callable[[], float | None]) -> None:
        """Epoch seconds after which no wait may end (None: only max_wait_seconds bounds it)."""
        self._deadline = deadline

    def acquire(self) -> None:
        """One request's token, waiting for it when the stack's budget is spent or Argyle paused us."""
        with self._lock:
            now = self._clock()
            limit = now + self.max_wait_seconds
            deadline = self._deadline()
            if deadline is not None:
                limit = min(limit, deadline)
            while True:
                now = self._clock()
                if self._leased and now - self._leased_at <= LEASE_SECONDS and now >= self._paused_until:
                    self._leased -= 1
                    return
                self._leased = 0
                wait = self._take_from_store(now)
                if wait <= 0:
                    return
                if now + wait > limit:
                    raise RateBudgetExhausted(
                        f"Argyle request budget: no token within {max(0.0, limit - now):.1f}s "
                        f"(the stack's shared rate limit, or Argyle's Retry-After)", retry_after=wait)
                self._sleep(wait)

    def slow_down(self, seconds: float) -> None:
        """Argyle answered 429: every invocation waits `seconds` (its Retry-After, or our backoff)."""
        until = self._clock() + max(0.0, seconds)
        with self._lock:
            if until <= self._paused_until:
                return
            self._paused_until = until
            self._leased = 0
        for shard in range(self.shards):
            self.store_calls += 1
            self._store.pause_shard(shard, until)

    def _take_from_store(self, now: float) -> float:
        """Take a lease from one shard (0: got one, a token is used now); else how long to wait."""
        waits: list[float] = []
        for shard in self._rand.sample(range(self.shards), min(TRIES_PER_ROUND, self.shards)):
            self.store_calls += 1
            state = self._store.read_shard(shard) or ShardState(self.capacity, now)
            if state.paused_until > now:
                self._paused_until = max(self._paused_until, state.paused_until)
                return state.paused_until - now  # paused everywhere: no other shard helps
            tokens = min(self.capacity, state.tokens + max(0.0, now - state.refilled_at) * self.rate)
            if tokens < 1.0:
                waits.append(max(MIN_WAIT_SECONDS, (1.0 - tokens) / self.rate))
                continue
            granted = min(self.lease, math.floor(tokens))
            self.store_calls += 1
            if self._store.write_shard(shard, tokens - granted, now, state.version):
                self._leased, self._leased_at = granted - 1, now
                return 0.0
            waits.append(0.0)  # someone else took from it first: try another shard now
        positive = [w for w in waits if w > 0]
        if len(positive) < len(waits):
            return MIN_WAIT_SECONDS  # a shard had tokens but was contended: go round again almost at once
        return min(positive) if positive else MIN_WAIT_SECONDS
