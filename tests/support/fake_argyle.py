"""An in-memory Argyle for unit tests of the sync logic: the ArgyleClient surface the sync uses
(list_activity_pages with resumable cursors, get_activity, calls/retries counters), the source's
truth, and the webhook bodies Argyle would send. Integration tests use the real sandbox over HTTP.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from argyle_pipeline.argyle.activity import Activity, parse_json
from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_pipeline.argyle.client import AccountNotFound, ActivityNotFound, ActivityPage, ArgyleUnavailable
from argyle_pipeline.exact_json import dumps_exact
from argyle_pipeline.timestamps import parse_timestamp

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def make_activity(account: str, n: int, *, updated: datetime | None = None, start: datetime | None = None,
                  activity_id: str | None = None) -> dict[str, Any]:
    """An activity shaped like Argyle's (money as strings, rates as JSON numbers, unknown fields)."""
    start = start or BASE_TIME + timedelta(hours=n)
    return {
        "id": activity_id or str(uuid.UUID(int=hash((account, n)) & ((1 << 128) - 1))),
        "account": account,
        "employer": "SprintCar",
        "status": "completed",
        "type": "rideshare",
        "start_date": iso(start),
        "end_date": iso(start + timedelta(minutes=30)),
        "income": {"currency": "USD", "pay": "9.04", "tips": f"{n % 7}.10", "total": "12.30",
                   "taxes": None},
        "income_rates": {"hour": Decimal("2.83"), "mile": Decimal("0.91")},
        "start_location": {"lat": "40.7128", "lng": "-74.0060", "formatted_address": "1 Main St"},
        "all_timestamps": {"request_at": int(start.timestamp())},
        "x_new_field": {"nested": [1, Decimal("2.5"), "three"]},
        "created_at": iso(start),
        "updated_at": iso(updated or start),
    }


def as_gig(doc: dict[str, Any]) -> dict[str, Any]:
    """A v1-shaped activity as v2 shapes a gig: the start and end under their v2 names."""
    gig = {k: v for k, v in doc.items() if k not in ("start_date", "end_date")}
    gig["start_datetime"], gig["end_datetime"] = doc.get("start_date"), doc.get("end_date")
    gig["task_count"] = 1
    return gig


class FakeArgyle:
    """`api`: the version whose objects it serves (V2: gigs, and no `count` in its pages)."""

    def __init__(self, page_limit: int = 200, api: ApiVersion = V1) -> None:
        self.page_limit = page_limit
        self.api = api
        self.accounts: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls = 0
        self.retries = 0
        self.list_requests: list[tuple[str | None, str | None, str | None, dict[str, str] | None]] = []
        self.get_requests: list[str] = []
        # Exceptions raised by the next calls, in order (e.g. ArgyleUnavailable for an exhausted 429).
        self.fail_next: list[Exception] = []
        # Called before every listing page after the first (offset > 0): Argyle changing the account
        # mid-listing, as its periodic scan does.
        self.between_pages: Any = None
        self.count_requests: list[tuple[str, str | None, str | None]] = []
        self.revoked: set[str] = set()
        self._clock = BASE_TIME + timedelta(days=400)

    # --- the source's changes -------------------------------------------------------------------

    def tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add(self, account: str, count: int, *, first: int = 0) -> list[dict[str, Any]]:
        docs = self.accounts.setdefault(account, {})
        added = []
        for n in range(first, first + count):
            doc = self._shaped(make_activity(account, n, updated=self.tick()))
            docs[doc["id"]] = doc
            added.append(doc)
        return added

    def update(self, account: str, activity_id: str, tips: str = "99.99") -> dict[str, Any]:
        doc = self.accounts[account][activity_id]
        doc["income"]["tips"] = tips
        doc["updated_at"] = iso(self.tick())
        return copy.deepcopy(doc)

    def remove(self, account: str, activity_id: str) -> None:
        del self.accounts[account][activity_id]

    def add_dated(self, account: str, n: int, start: datetime) -> dict[str, Any]:
        doc = self._shaped(make_activity(account, n, updated=self.tick(), start=start))
        self.accounts.setdefault(account, {})[doc["id"]] = doc
        return doc

    def _shaped(self, doc: dict[str, Any]) -> dict[str, Any]:
        return doc if self.api.start_field == "start_date" else as_gig(doc)

    def truth(self, account: str) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.accounts.get(account, {}))

    # --- the client surface ---------------------------------------------------------------------

    def _call(self) -> None:
        self.calls += 1
        if self.fail_next:
            raise self.fail_next.pop(0)

    def list_activity_pages(self, account: str | None, from_start_date: str | None = None,
                            to_start_date: str | None = None,
                            cursor: dict[str, str] | None = None) -> Iterator[ActivityPage]:
        self.list_requests.append((account, from_start_date, to_start_date, cursor))
        offset = int((cursor or {}).get("offset", "0"))
        while True:
            if offset and self.between_pages is not None:
                self.between_pages(account)
            self._call()
            docs = self._matching(account, from_start_date, to_start_date)
            # Offset pagination, as Django REST framework's: positions are counted afresh per request.
            page = docs[offset:offset + self.page_limit]
            offset += self.page_limit
            next_cursor = {"offset": str(offset)} if offset < len(docs) else None
            # Through JSON, as over HTTP: the sync must not share objects with the source.
            count = len(docs) if self.api.list_counts else None
            yield ActivityPage([Activity.from_api(parse_json(_dumps(d)), self.api) for d in page], next_cursor,
                               count)
            if next_cursor is None:
                return

    def count_activities(self, account: str, from_start_date: str | None = None,
                         to_start_date: str | None = None) -> int | None:
        self.count_requests.append((account, from_start_date, to_start_date))
        self._call()
        if not self.api.list_counts:
            return None
        return len(self._matching(account, from_start_date, to_start_date))

    def _matching(self, account: str | None, from_start_date: str | None,
                  to_start_date: str | None) -> list[dict[str, Any]]:
        field = self.api.start_field

        def start(doc: dict[str, Any]) -> datetime | None:
            return parse_timestamp(doc[field]) if doc.get(field) else None

        low = parse_timestamp(from_start_date) if from_start_date else None
        high = parse_timestamp(to_start_date) if to_start_date else None
        filtered = low is not None or high is not None
        found = []
        for doc in self.accounts.get(account or "", {}).values():
            when = start(doc)
            if when is None:
                if not filtered:  # a date filter never matches an undated activity
                    found.append(doc)
                continue
            if (low is None or when >= low) and (high is None or when <= high):
                found.append(doc)
        return sorted(found, key=lambda d: (d.get(field) or "~", d["id"]))

    def get_account(self, account_id: str) -> dict[str, Any]:
        self._call()
        if account_id in self.accounts and account_id not in self.revoked:
            return {"id": account_id}
        raise AccountNotFound(f"account {account_id} not found", status=404)

    def revoke(self, account: str) -> None:
        """The worker revoked access: Argyle deletes the account and its data."""
        self.accounts.pop(account, None)
        self.revoked.add(account)

    def get_activity(self, activity_id: str) -> Activity:
        self.get_requests.append(activity_id)
        self._call()
        for docs in self.accounts.values():
            if activity_id in docs:
                return Activity.from_api(parse_json(_dumps(docs[activity_id])), self.api)
        raise ActivityNotFound(f"activity {activity_id} not found", status=404)


def unavailable() -> ArgyleUnavailable:
    return ArgyleUnavailable("GET /activities: HTTP 429 after 5 attempt(s)", status=429)


def _dumps(value: Any) -> str:
    return dumps_exact(value)


# --- webhook bodies, as Argyle sends them ---------------------------------------------------------

def webhook_body(event: str, name: str = "test subscription", **data: Any) -> bytes:
    return dumps_exact({"event": event, "name": name, "data": data}).encode("utf-8")


def range_of(docs: list[dict[str, Any]], field: str = "start_date") -> tuple[str | None, str | None]:
    dates = sorted(d[field] for d in docs)
    return (dates[0], dates[-1]) if dates else (None, None)
