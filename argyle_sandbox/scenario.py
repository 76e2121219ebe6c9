"""What Argyle's scans do to the data, and the webhooks its documentation promises for each.

The event names below are v1's; a v2 sandbox sends each one's `gigs.*` twin (ids in
`updated_gigs` / `removed_gigs`), and v2's `users.fully_synced` after every account's first scan.

- connect_account: the initial scan. `accounts.connected`, then per subscription
  `activities.partially_synced` (its config.days_synced, default 30; skipped when that window
  already holds every activity, as the docs allow), `activities.fully_synced`,
  `accounts.updated` (the scan set scanned_at), and `users.fully_synced` once all of the user's
  accounts are synced (sent again for each new account, as v2 documents; v1 does not say).
  Asked to fail (`fail_with`), only `accounts.failed`: the account is in error, without data.
- periodic_scan: adds activities started since the last scan, updates (late tips) and removes
  some, and sends `activities.added` / `.updated` / `.removed` with the documented fields, then
  `accounts.updated`. `*_from`/`*_to` are the start-date range of the activities concerned, so
  they can be passed straight to the activities filters, as the docs say to.
- scan_before_page: a periodic scan that lands between two page requests of a listing (the
  page_shift_* faults): it removes and adds activities that sort before the requested page, so an
  offset listing skips or repeats live ones, and sends `activities.removed` / `.added`, then
  `accounts.updated`.
- lying_removal: a validly signed `activities.removed` naming activities that stay live, as a
  leaked secret or a mistaken event would send.
- account_error: the account's connection goes into error (`accounts.updated`); its data stays.
- revoke: the user revokes access. The account and all its data are deleted, and the only
  webhook is `accounts.removed` (Argyle sends no `activities.removed` then).

`accounts.connected` / `.failed` / `.updated` carry the account object as `data.resource` for a
subscription whose config has `include_resource: true`; `accounts.removed` never does (the
account is gone).

The data is complete before any webhook leaves (deliveries are asynchronous, through the outbox).
Every delivery passes the delivery faults (dropped, duplicated, reordered).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_pipeline.receiving.signature import sign
from argyle_sandbox.delivery import Delivery, Outbox
from argyle_sandbox.faults import Faults
from argyle_sandbox.pagination import encode_cursor
from argyle_sandbox.state import SandboxState, SortKey, StartRange
from argyle_sandbox.synthetic import NULL_START_KEY, Account, ActivityRecord, iso_micros, iso_seconds

DAY = 86_400
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_error_code(code: object) -> str:
    """A connection error code as Argyle writes them (snake_case, e.g. "invalid_credentials");
    ValueError otherwise. Codes the sandbox has no message for are allowed: Argyle adds codes."""
    if not isinstance(code, str) or not ERROR_CODE.fullmatch(code):
        raise ValueError(f"error_code must be a snake_case code such as 'invalid_credentials', got {code!r}")
    return code


@dataclass(frozen=True)
class ScanResult:
    account: str
    added: list[str]
    updated: list[str]
    removed: list[str]


@dataclass(frozen=True)
class Revocation:
    account: str
    user: str
    activities_removed: int


@dataclass(frozen=True)
class PageShift:
    """What one scan between two page requests did (the page_shift_* faults), for tests."""

    account: str
    page: dict[str, str]  # the requested page's position: {"offset": "200"} or {"cursor": "..."}
    removed: list[str]
    added: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "page": dict(self.page), "removed": self.removed, "added": self.added}


def webhook_body(event: str, name: str, data: dict[str, Any]) -> bytes:
    # Argyle's own example body ('{"name": "Account added", "event": "accounts.added"}') uses
    # Python's default separators; this renders the same way.
    return json.dumps({"event": event, "name": name, "data": data}).encode("utf-8")


class Scenario:
    def __init__(self, state: SandboxState, outbox: Outbox, faults: Faults, api: ApiVersion = V1) -> None:
        self.state = state
        self.api = api  # whose events it sends: activities.* (v1) or gigs.* (v2)
        self.outbox = outbox
        self.faults = faults
        self.page_shifts: list[PageShift] = []  # every scan the page_shift_* faults caused

    # --- scans ----------------------------------------------------------------------------------

    def connect_account(
        self,
        user_id: str | None = None,
        n_activities: int = 1000,
        *,
        years: float = 3.0,
        employer: str | None = None,
        undated: int = 0,
        fail_with: str | None = None,
    ) -> tuple[str, str]:
        """A new account with n_activities spread over `years` (plus `undated` without a start date);
        returns (user_id, account_id) once the webhooks are queued. With `fail_with` (an error
        code) the connection fails instead: no data, connection.status "error", `accounts.failed`."""
        if fail_with is not None:
            check_error_code(fail_with)
        state = self.state
        with state.lock:
            user = state.create_user(user_id)
            account = state.create_account(user, employer)
            if fail_with is not None:
                state.set_connection(account, fail_with)
                deliveries = self._account_deliveries(account, "accounts.failed")
            else:
                deliveries = self._initial_scan(account, n_activities, years=years, undated=undated)
        self._queue(deliveries)
        return user.id, account.id

    def _initial_scan(self, account: Account, n_activities: int, *, years: float, undated: int) -> list[Delivery]:
        state = self.state
        connected = self._account_deliveries(account, "accounts.connected")  # the object before the scan
        now = state.now
        state.add_activities(account, n_activities, now - int(years * 365 * DAY), now - 60, undated=undated)
        account.fully_synced = True
        state.mark_scanned(account)
        messages: list[tuple[str, dict[str, Any] | None]] = [
            (self.api.event("partially_synced"), None),  # per subscription, below
            (self.api.event("fully_synced"), self._available(account)),
        ]
        deliveries = connected
        for event, data in messages:
            for sub in state.subscribers(event):
                payload = data if data is not None else self._partially_synced(account, sub.days_synced)
                if payload is not None:
                    deliveries.append(self._delivery(sub.id, event, payload))
        deliveries += self._account_deliveries(account, "accounts.updated")
        user = state.users[account.user]
        others = [state.accounts[a] for a in user.accounts]
        # An account that failed to connect has no data to sync: it does not hold the user back.
        # v2 sends it again whenever another account of the user finishes (API-NOTES.md).
        if self.api.user_synced_per_account or all(
                a.fully_synced or a.connection_status == "error" for a in others):
            data = self._user_payload(user.id)
            subscribers = state.subscribers("users.fully_synced")
            deliveries += [self._delivery(sub.id, "users.fully_synced", data) for sub in subscribers]
        return deliveries

    def periodic_scan(
        self,
        account_id: str,
        add: int = 0,
        update: int = 0,
        remove: int = 0,
        *,
        update_ids: list[str] | None = None,
        remove_ids: list[str] | None = None,
        interval: float = DAY,
    ) -> ScanResult:
        """Advance the clock by `interval`, then change the account; ids may be given or drawn."""
        state = self.state
        with state.lock:
            account = state.account(account_id)
            if not account.fully_synced:
                raise ValueError(f"account {account_id} has not finished its initial scan")
            if account.connection_status == "error":
                raise ValueError(f"account {account_id} is in error ({account.error_code}): Argyle cannot scan it")
            since = state.now
            state.advance(interval)
            removing = list(remove_ids) if remove_ids is not None else state.pick(account, remove)
            updating = (
                list(update_ids) if update_ids is not None else state.pick(account, update, exclude=set(removing))
            )
            updated = state.update_activities(account, updating)
            removed = state.remove_activities(account, removing)
            added = state.add_activities(account, add, since + 1, state.now) if add else []
            state.mark_scanned(account)
            deliveries = self._change_deliveries(account, added=added, updated=updated, removed=removed)
            deliveries += self._account_deliveries(account, "accounts.updated")
        self._queue(deliveries)
        return ScanResult(
            account=account_id,
            added=[r.id for r in added],
            updated=[r.id for r in updated],
            removed=[r.id for r in removed],
        )

    def scan_before_page(
        self, account_id: str, window: StartRange, *, offset: int | None = None, after: SortKey | None = None
    ) -> PageShift | None:
        """Called before a page that continues a listing of `account_id` (at `offset`, or after
        the keyset cursor `after`) is computed: when the page_shift_* faults fire, remove and add
        activities that sort before that page, as a periodic scan would, and queue the webhooks.
        Removals are drawn from what the listing has already passed; additions start after the
        last activity before the page, inside the listing's date range (none when that is empty)."""
        state = self.state
        with state.lock:
            account = state.accounts.get(account_id)
            if account is None:
                return None
            last_before = after if after is not None else state.last_key_before(account, window, offset or 0)
            if last_before is None:
                return None  # nothing lies before the page: there is nothing to shift
            shift = self.faults.take_page_shift(account_id)
            if shift is None:
                return None
            remove, add = shift
            passed = [key[1] for key in state.keys_through(account, window, last_before)]
            removed = state.remove_activities(account, state.sample(passed, remove))
            first, last = self._starts_before(last_before, window)
            added = state.add_activities(account, add, first, last) if add and first <= last else []
            state.mark_scanned(account)
            deliveries = self._change_deliveries(account, added=added, updated=[], removed=removed)
            deliveries += self._account_deliveries(account, "accounts.updated")
            page = {"offset": str(offset)} if after is None else {"cursor": encode_cursor(after)}
            record = PageShift(account_id, page, [r.id for r in removed], [r.id for r in added])
            self.page_shifts.append(record)
        self._queue(deliveries)
        return record

    def _starts_before(self, key: SortKey, window: StartRange) -> tuple[int, int]:
        """[first, last] start dates that list before `key` (keys are -start) and inside `window`,
        no later than now; first > last when there is no room."""
        now = self.state.now
        last = now if window.last is None else min(window.last, now)
        if key[0] != NULL_START_KEY:
            return -key[0] + 1, last
        # Every dated activity lists before an undated one.
        return (window.first if window.first is not None else last - DAY), last

    def lying_removal(self, account_id: str, n: int = 10, *, ids: list[str] | None = None) -> list[str]:
        """Send a validly signed `activities.removed` naming n activities (or `ids`) of the account
        that stay live: GET /v1/activities/{id} still answers them. Returns the ids named."""
        state = self.state
        with state.lock:
            account = state.account(account_id)
            if ids is None:
                if not 1 <= n <= len(account.records):
                    live = len(account.records)
                    raise ValueError(f"n must be between 1 and the account's {live} activities, got {n}")
                ids = state.pick(account, n)
            unknown = [i for i in ids if i not in account.records]
            if unknown or not ids:
                raise ValueError(f"not activities of account {account_id}: {unknown or 'none given'}")
            data = self._changed(account, [account.records[i] for i in ids], "removed")
            event = self.api.event("removed")
            deliveries = [self._delivery(sub.id, event, data) for sub in state.subscribers(event)]
        self._queue(deliveries)
        return list(ids)

    def account_error(self, account_id: str, error_code: str) -> dict[str, Any]:
        """Put the account's connection into error with `error_code` (its data stays, as Argyle
        keeps it) and send `accounts.updated`; returns the account object."""
        check_error_code(error_code)
        state = self.state
        with state.lock:
            account = state.account(account_id)
            state.set_connection(account, error_code)
            deliveries = self._account_deliveries(account, "accounts.updated")
            document = state.account_document(account_id)
        self._queue(deliveries)
        return document

    def revoke(self, account_id: str) -> Revocation:
        """The user revokes access: the account and every activity of it are deleted, and only
        `accounts.removed` ({account, user}) is sent. KeyError when unknown or already revoked."""
        state = self.state
        with state.lock:
            account, removed = state.revoke_account(account_id)
            data = {"account": account.id, "user": account.user}
            subscribers = state.subscribers("accounts.removed")
            deliveries = [self._delivery(sub.id, "accounts.removed", data) for sub in subscribers]
        self._queue(deliveries)
        return Revocation(account=account.id, user=account.user, activities_removed=removed)

    def send_event(self, event: str, data: dict[str, Any]) -> int:
        """Deliver any event (accounts.*, something new) to its subscribers; returns how many."""
        with self.state.lock:
            deliveries = [self._delivery(sub.id, event, data) for sub in self.state.subscribers(event)]
        self._queue(deliveries)
        return len(deliveries)

    # --- payloads -------------------------------------------------------------------------------

    def _account_deliveries(self, account: Account, event: str) -> list[Delivery]:
        """`event` ({account, user}) to its subscribers, with the account object as it is now in
        `resource` for those whose config asks for it."""
        data: dict[str, Any] = {"account": account.id, "user": account.user}
        deliveries = []
        resource: dict[str, Any] | None = None
        for sub in self.state.subscribers(event):
            if sub.include_resource:
                resource = resource or self.state.account_document(account.id)
                deliveries.append(self._delivery(sub.id, event, {**data, "resource": resource}))
            else:
                deliveries.append(self._delivery(sub.id, event, data))
        return deliveries

    def _available(self, account: Account) -> dict[str, Any]:
        oldest, newest = self.state.date_span(account)
        data: dict[str, Any] = {"account": account.id, "user": account.user}
        data["available_from"] = iso_seconds(oldest)
        data["available_to"] = iso_seconds(newest)
        data["available_count"] = len(account.records)
        return data

    def _partially_synced(self, account: Account, days: int) -> dict[str, Any] | None:
        now = self.state.now
        window = StartRange(now - days * DAY, now)
        lo, hi = window.bounds(account.keys)
        if hi - lo == len(account.records):
            return None  # the window holds everything: Argyle sends only fully_synced
        return {
            "account": account.id,
            "user": account.user,
            "days_synced": days,
            "available_from": iso_seconds(-account.keys[hi - 1][0]) if hi > lo else None,
            "available_to": iso_seconds(-account.keys[lo][0]) if hi > lo else None,
            "available_count": hi - lo,
        }

    def _change_deliveries(
        self,
        account: Account,
        *,
        added: list[ActivityRecord],
        updated: list[ActivityRecord],
        removed: list[ActivityRecord],
    ) -> list[Delivery]:
        """`activities.added` / `.updated` / `.removed` to their subscribers, each only when something changed."""
        deliveries = []
        for event, records, prefix in (
            (self.api.event("added"), added, "added"),
            (self.api.event("updated"), updated, "updated"),
            (self.api.event("removed"), removed, "removed"),
        ):
            if not records:
                continue
            data = self._changed(account, records, prefix)
            for sub in self.state.subscribers(event):
                deliveries.append(self._delivery(sub.id, event, data))
        return deliveries

    def _changed(self, account: Account, records: list[ActivityRecord], prefix: str) -> dict[str, Any]:
        starts = [r.start for r in records if r.start is not None]
        data: dict[str, Any] = {
            "account": account.id,
            "user": account.user,
            f"{prefix}_from": iso_seconds(min(starts)) if starts else None,
            f"{prefix}_to": iso_seconds(max(starts)) if starts else None,
            f"{prefix}_count": len(records),
        }
        if prefix != "added":
            data[self.api.ids_field(prefix)] = [r.id for r in records]
        available = self._available(account)
        data.update({k: v for k, v in available.items() if k.startswith("available_")})
        return data

    def _user_payload(self, user_id: str) -> dict[str, Any]:
        user = self.state.users[user_id]
        # Accounts that failed to connect are not connected providers.
        accounts = [self.state.accounts[a] for a in user.accounts if self.state.accounts[a].fully_synced]
        # v2 lists connected accounts; v1 the data providers (link items).
        connections = (sorted(a.id for a in accounts) if self.api.user_synced_per_account
                       else sorted({a.link_item for a in accounts}))
        resource: dict[str, Any] = {
            "id": user.id,
            self.api.user_connections_field: connections,
            "employers_connected": sorted({a.employer for a in accounts}),
            "external_metadata": dict(user.external_metadata),
            "created_at": iso_micros(user.created_us),
        }
        if self.api.user_synced_per_account:  # v2's resource: items and external id
            resource["items_connected"] = sorted({a.link_item for a in accounts})
            resource["external_id"] = None
        return {"user": user.id, "resource": resource}

    # --- delivery -------------------------------------------------------------------------------

    def _delivery(self, subscription_id: str, event: str, data: dict[str, Any]) -> Delivery:
        sub = self.state.subscriptions[subscription_id]
        body = webhook_body(event, sub.name, data)
        return Delivery(
            subscription_id=sub.id,
            url=sub.url,
            event=event,
            body=body,
            signature=sign(body, sub.secret) if sub.secret else None,
        )

    def _queue(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            # Argyle never sent a dropped webhook, so it has no duplicates either.
            delivery.dropped = self.faults.drops(delivery.event)
        copies = max(0, int(self.faults.duplicate_deliveries))
        if copies:
            deliveries = [
                d if d.dropped else Delivery(d.subscription_id, d.url, d.event, d.body, d.signature)
                for d in deliveries
                for _ in range(1 if d.dropped else 1 + copies)
            ]
        if self.faults.reorder_deliveries:
            deliveries = deliveries[::-1]
        if deliveries:
            self.outbox.put(deliveries)
