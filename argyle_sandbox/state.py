"""Everything the sandbox knows: users, accounts and their activities, webhook subscriptions.

Each account keeps its activities' sort keys in one sorted list (newest start first, then id),
so a page is two bisects and a slice, whatever the account's size: at an offset (a position,
which shifts when activities before it are added or removed) or after a keyset cursor (the last
key served, which stays valid). One lock guards it all; documents are rendered outside it.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_sandbox.synthetic import (
    EMPLOYERS,
    NULL_START_KEY,
    PLACES,
    Account,
    ActivityRecord,
    User,
    iso_micros,
    new_uuid,
    render_account,
    render_object,
)

# The sandbox's clock starts here (not at the wall clock), so a seed always gives the same data.
DEFAULT_NOW = datetime(2024, 6, 1, tzinfo=UTC)
DEFAULT_DAYS_SYNCED = 30

SortKey = tuple[int, str]

IncludeResourceRule = Literal["refuse", "drop"]
INCLUDE_RESOURCE_RULES: tuple[IncludeResourceRule, ...] = ("refuse", "drop")
SINGLE_EVENT_ONLY = "include_resource can only be applied to a subscription with exactly one event (not '*')."


@dataclass
class Subscription:
    id: str
    name: str
    events: list[str]
    url: str
    secret: str | None
    config: dict[str, Any] | None
    created_us: int
    updated_us: int

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events

    @property
    def include_resource(self) -> bool:
        return (self.config or {}).get("include_resource") is True

    @property
    def days_synced(self) -> int:
        value = (self.config or {}).get("days_synced")
        return value if isinstance(value, int) and value > 0 else DEFAULT_DAYS_SYNCED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "events": list(self.events),
            "config": self.config,
            "secret": self.secret,
            "url": self.url,
            "created_at": iso_micros(self.created_us),
            "updated_at": iso_micros(self.updated_us),
        }


def subscription_config(
    events: list[str], config: dict[str, Any] | None, rule: IncludeResourceRule
) -> dict[str, Any] | None:
    """The config a new subscription keeps. Argyle allows include_resource only on a subscription
    to one event: asked of more (or of "*"), rule "refuse" raises ValueError, rule "drop" keeps the
    config without it (Argyle's own create example answers so: 201 with `"config": {}`)."""
    if not config or "include_resource" not in config:
        return config
    if not isinstance(config["include_resource"], bool):
        raise ValueError("include_resource must be true or false.")
    if not config["include_resource"] or (len(events) == 1 and events[0] != "*"):
        return config
    if rule == "refuse":
        raise ValueError(SINGLE_EVENT_ONLY)
    return {k: v for k, v in config.items() if k != "include_resource"}


@dataclass
class PageSlice:
    items: list[tuple[Account, ActivityRecord]]
    count: int  # every activity the listing's filters match, now
    next_after: SortKey | None = None  # keyset pages: the key to continue after, when there is more


@dataclass
class StartRange:
    """Inclusive bounds on start (epoch seconds); a bound of None is open. Undated activities only
    match when neither bound is set (a date filter cannot match a null start_date)."""

    first: int | None = None
    last: int | None = None
    filtered: bool = field(init=False)

    def __post_init__(self) -> None:
        self.filtered = self.first is not None or self.last is not None

    def bounds(self, keys: list[SortKey]) -> tuple[int, int]:
        """[lo, hi) of `keys` inside the range (keys hold -start, so the range flips)."""
        lo = 0 if self.last is None else bisect_left(keys, (-self.last,))
        if self.first is not None:
            hi = bisect_left(keys, (-self.first + 1,))
        elif self.filtered:
            hi = bisect_left(keys, (NULL_START_KEY,))
        else:
            hi = len(keys)
        return lo, max(lo, hi)


class SandboxState:
    def __init__(self, seed: int = 1, now: datetime = DEFAULT_NOW, api: ApiVersion = V1) -> None:
        self.seed = seed
        self.api = api  # whose objects (activities or gigs) the API and the truth render
        self.lock = threading.RLock()
        self._rng = random.Random(seed)
        self._ids = random.Random(seed * 7919 + 1)  # subscription ids: independent of data order
        self.now_us = int(now.timestamp() * 1_000_000)
        self.users: dict[str, User] = {}
        self.accounts: dict[str, Account] = {}
        self.revoked: set[str] = set()  # account ids deleted by a revoke: never served or reused
        self._activity_account: dict[str, str] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._last_wall_us = 0

    # --- clock ----------------------------------------------------------------------------------

    def advance(self, seconds: float) -> int:
        with self.lock:
            self.now_us += max(1, int(seconds * 1_000_000))
            return self.now_us

    @property
    def now(self) -> int:
        """Now, in epoch seconds, on the sandbox's clock."""
        return self.now_us // 1_000_000

    # --- users and accounts -------------------------------------------------------------------

    def create_user(self, user_id: str | None = None) -> User:
        with self.lock:
            user_id = user_id or new_uuid(self._rng)
            user = self.users.get(user_id)
            if user is None:
                user = User(id=user_id, created_us=self.advance(1))
                self.users[user_id] = user
            return user

    def create_account(self, user: User, employer: str | None = None, account_id: str | None = None) -> Account:
        """`account_id`: a given id (an event sample's) instead of a generated one."""
        with self.lock:
            choices = [e for e in EMPLOYERS if employer is None or e[0] == employer or e[1] == employer]
            if not choices:
                known = ", ".join(e[1] for e in EMPLOYERS)
                raise ValueError(f"unknown employer {employer!r}; known: {known}")
            name, link_item, kind, services = self._rng.choice(choices)
            if account_id is None:
                account_id = new_uuid(self._rng)
                while account_id in self.revoked or account_id in self.accounts:
                    account_id = new_uuid(self._rng)
            account = Account(
                id=account_id,
                user=user.id,
                employer=name,
                link_item=link_item,
                activity_type=kind,
                service_types=services,
                created_us=self.advance(1),
                place=self._rng.randrange(len(PLACES)),
            )
            self.accounts[account.id] = account
            user.accounts.append(account.id)
            return account

    def account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            gone = "was revoked" if account_id in self.revoked else "is unknown"
            raise KeyError(f"account {account_id} {gone}") from None

    def account_document(self, account_id: str) -> dict[str, Any]:
        """The account object, as GET /v1/accounts/{id} answers it; KeyError when unknown or revoked."""
        with self.lock:
            account = self.account(account_id)
            return render_account(account, *self.date_span(account), api=self.api)

    def mark_scanned(self, account: Account) -> None:
        """A scan of the account ended now: scanned_at (and so the account object) changes. The
        clock stays where the scan left it, so a seed still gives the same activities as before."""
        with self.lock:
            account.scanned_us = account.updated_us = self.now_us

    def set_connection(self, account: Account, error_code: str | None) -> None:
        """connection.status "error" with `error_code`, or "connected" again when it is None."""
        with self.lock:
            stamp = self.advance(1)
            account.connection_status = "connected" if error_code is None else "error"
            account.error_code = error_code
            account.connection_updated_us = account.updated_us = stamp

    def revoke_account(self, account_id: str) -> tuple[Account, int]:
        """Delete the account and every activity of it, as Argyle does when the user revokes
        access; returns the account and how many activities went. KeyError when unknown or revoked."""
        with self.lock:
            account = self.account(account_id)
            del self.accounts[account_id]
            self.revoked.add(account_id)
            for activity_id in account.records:
                del self._activity_account[activity_id]
            removed = len(account.records)
            account.records.clear()
            account.keys.clear()
            user = self.users.get(account.user)
            if user is not None:
                user.accounts.remove(account_id)
            return account, removed

    # --- activities -----------------------------------------------------------------------------

    def add_activities(self, account: Account, n: int, first: int, last: int, undated: int = 0) -> list[ActivityRecord]:
        """n activities starting uniformly in [first, last] (epoch seconds), plus `undated` without a
        start date. Bulk adds re-sort once; small ones insert in place."""
        with self.lock:
            rng = self._rng
            stamp = self.advance(1)
            made = []
            for i in range(n + undated):
                start = rng.randint(first, last) if i < n else None
                rec = ActivityRecord(
                    id=new_uuid(rng),
                    serial=rng.getrandbits(63),
                    start=start,
                    created_us=stamp + i,
                    updated_us=stamp + i,
                )
                account.records[rec.id] = rec
                self._activity_account[rec.id] = account.id
                made.append(rec)
            if len(made) > 64:
                account.keys.extend(r.key for r in made)
                account.keys.sort()
            else:
                for rec in made:
                    insort(account.keys, rec.key)
            self.now_us = max(self.now_us, stamp + len(made))
            return made

    def pick(self, account: Account, n: int, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """n distinct activity ids of the account, drawn from the seeded generator."""
        with self.lock:
            pool = [a for a in account.records if a not in exclude]
            return self._rng.sample(pool, min(n, len(pool)))

    def update_activities(self, account: Account, ids: list[str]) -> list[ActivityRecord]:
        with self.lock:
            stamp = self.advance(1)
            updated = []
            for i, activity_id in enumerate(ids):
                rec = account.records.get(activity_id)
                if rec is None:
                    raise KeyError(f"activity {activity_id} is not in account {account.id}")
                rec.revision += 1
                rec.updated_us = stamp + i
                updated.append(rec)
            self.now_us = max(self.now_us, stamp + len(ids))
            return updated

    def remove_activities(self, account: Account, ids: list[str]) -> list[ActivityRecord]:
        with self.lock:
            removed = []
            for activity_id in ids:
                rec = account.records.pop(activity_id, None)
                if rec is None:
                    raise KeyError(f"activity {activity_id} is not in account {account.id}")
                del self._activity_account[activity_id]
                index = bisect_left(account.keys, rec.key)
                del account.keys[index]
                removed.append(rec)
            return removed

    def find(self, activity_id: str) -> tuple[Account, ActivityRecord] | None:
        with self.lock:
            account_id = self._activity_account.get(activity_id)
            if account_id is None:
                return None
            account = self.accounts[account_id]
            return account, account.records[activity_id]

    def _listed(self, account_id: str | None) -> list[Account]:
        if account_id is None:
            return list(self.accounts.values())
        found = self.accounts.get(account_id)
        return [found] if found is not None else []

    def page(self, account_id: str | None, window: StartRange, after: SortKey | None, limit: int) -> PageSlice:
        """One keyset page in listing order: the `limit` keys after `after`. Without an account,
        every account's activities are merged."""
        with self.lock:
            accounts = self._listed(account_id)
            count = 0
            runs = []
            for account in accounts:
                lo, hi = window.bounds(account.keys)
                count += hi - lo
                begin = lo if after is None else max(lo, bisect_right(account.keys, after))
                # limit + 1 tells whether anything follows this page.
                keys = account.keys[begin : min(hi, begin + limit + 1)]
                runs.append([(key, account) for key in keys])
            merged = list(itertools.islice(heapq.merge(*runs, key=lambda pair: pair[0]), limit + 1))
            more = len(merged) > limit
            merged = merged[:limit]
            items = [(account, account.records[key[1]]) for key, account in merged]
            return PageSlice(items=items, count=count, next_after=merged[-1][0] if more and merged else None)

    def offset_page(self, account_id: str | None, window: StartRange, offset: int, limit: int) -> PageSlice:
        """One page at a position, counted in the listing as it is now (as DRF's offset pagination
        counts it): a change before `offset` since the previous page shifts what this one holds."""
        with self.lock:
            accounts = self._listed(account_id)
            bounds = [window.bounds(account.keys) for account in accounts]
            count = sum(hi - lo for lo, hi in bounds)
            if len(accounts) == 1:
                (account,), ((lo, hi),) = accounts, bounds
                picked = [(key, account) for key in account.keys[lo + offset : min(hi, lo + offset + limit)]]
            else:
                # Merged: only an account's first offset + limit keys in the window can be on the page.
                runs = [
                    [(key, account) for key in account.keys[lo : min(hi, lo + offset + limit)]]
                    for account, (lo, hi) in zip(accounts, bounds, strict=True)
                ]
                merged = heapq.merge(*runs, key=lambda pair: pair[0])
                picked = list(itertools.islice(merged, offset, offset + limit))
            items = [(account, account.records[key[1]]) for key, account in picked]
            return PageSlice(items=items, count=count)

    def last_key_before(self, account: Account, window: StartRange, offset: int) -> SortKey | None:
        """The key listed just before position `offset` (the last one when offset is past the end);
        None when nothing is listed before it."""
        with self.lock:
            lo, hi = window.bounds(account.keys)
            position = lo + min(offset, hi - lo) - 1
            return account.keys[position] if position >= lo else None

    def keys_through(self, account: Account, window: StartRange, last: SortKey) -> list[SortKey]:
        """The account's keys in the window, in order, up to and including `last`."""
        with self.lock:
            lo, hi = window.bounds(account.keys)
            return account.keys[lo : min(hi, bisect_right(account.keys, last))]

    def sample(self, ids: list[str], n: int) -> list[str]:
        """n distinct ids from `ids` (all when there are fewer), drawn from the seeded generator."""
        with self.lock:
            return self._rng.sample(ids, min(n, len(ids)))

    def documents(self, account_id: str) -> list[dict[str, Any]]:
        """Every activity of the account as the API renders it, in listing order."""
        with self.lock:
            account = self.account(account_id)
            records = [account.records[key[1]] for key in account.keys]
        return [render_object(account, rec, self.api) for rec in records]

    def date_span(self, account: Account) -> tuple[int | None, int | None]:
        """(oldest, newest) start of the account's dated activities."""
        with self.lock:
            dated_end = bisect_left(account.keys, (NULL_START_KEY,))
            if dated_end == 0:
                return None, None
            return -account.keys[dated_end - 1][0], -account.keys[0][0]

    def count_between(self, account: Account, first: int | None, last: int | None) -> int:
        with self.lock:
            lo, hi = StartRange(first, last).bounds(account.keys)
            return hi - lo

    # --- webhook subscriptions ------------------------------------------------------------------

    def _wall_us(self) -> int:
        # Wall-clock creation times (what the created_at filters compare), strictly increasing.
        self._last_wall_us = max(self._last_wall_us + 1, time.time_ns() // 1000)
        return self._last_wall_us

    def add_subscription(
        self, *, name: str, events: list[str], url: str, secret: str | None, config: dict[str, Any] | None
    ) -> Subscription:
        with self.lock:
            stamp = self._wall_us()
            sub = Subscription(
                id=new_uuid(self._ids),
                name=name,
                events=list(events),
                url=url,
                secret=secret,
                config=config,
                created_us=stamp,
                updated_us=stamp,
            )
            self.subscriptions[sub.id] = sub
            return sub

    def remove_subscription(self, subscription_id: str) -> bool:
        with self.lock:
            return self.subscriptions.pop(subscription_id, None) is not None

    def subscribers(self, event: str) -> list[Subscription]:
        with self.lock:
            return [s for s in self.subscriptions.values() if s.wants(event)]
