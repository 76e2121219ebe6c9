"""Deterministic synthetic Argyle data: compact records, rendered into full v1 activities or v2
gigs on demand (`render_object`: the API version's shape of the same record).

A record holds only what changes (ids, start, timestamps, a revision) and a per-activity seed;
everything else (income, locations, circumstances...) is drawn from that seed whenever the
document is rendered. So 100,000 activities cost a few tens of MB, and the same seed always
gives the same documents, in the shapes API-NOTES.md describes: money as strings, income_rates
as JSON numbers, nulls where Argyle sends them, both datetime maps.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from argyle_pipeline.argyle.api_versions import V1, ApiVersion

T = TypeVar("T")

# (employer, link_item, activity type, service types)
EMPLOYERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Uber", "uber", "rideshare", ("UberX", "UberXL", "Comfort")),
    ("Lyft", "lyft", "rideshare", ("Standard", "XL", "Shared")),
    ("SprintCar", "sprintcar", "rideshare", ("Standard",)),
    ("DoorDash", "doordash", "delivery", ("Dasher", "Shop & Deliver")),
    ("Instacart", "instacart", "delivery", ("Full Service", "Delivery Only")),
    ("Whole Goods", "whole_goods", "hourly", ("Shift",)),
    ("TaskRabbit", "taskrabbit", "services", ("Handyman", "Moving Help")),
)

# (latitude, longitude, street, city, zone)
PLACES: tuple[tuple[float, float, str, str, str], ...] = (
    (40.7128, -74.0060, "Broadway", "New York, NY 10007", "America/New_York"),
    (34.0522, -118.2437, "Spring St", "Los Angeles, CA 90012", "America/Los_Angeles"),
    (41.8781, -87.6298, "State St", "Chicago, IL 60602", "America/Chicago"),
    (29.7604, -95.3698, "Main St", "Houston, TX 77002", "America/Chicago"),
    (47.6062, -122.3321, "Pike St", "Seattle, WA 98101", "America/Los_Angeles"),
)

DATETIME_KEYS = (
    "request_at",
    "accept_at",
    "pickup_at",
    "dropoff_at",
    "cancel_at",
    "shift_start",
    "shift_end",
    "break_start",
    "break_end",
)

# Sort key of an activity without a start date: after every dated one (keys are -start).
NULL_START_KEY = 1 << 62


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso_seconds(ts: int | None) -> str | None:
    if ts is None:
        return None
    day, second = divmod(ts, 86_400)
    return f"{_iso_day(day)}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_day(day: int) -> str:
    # A page renders a dozen datetimes per activity, mostly on a few days: the date part once a day.
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


class Draws:
    """A document's deterministic draws: 32-bit words from BLAKE2b blocks of (seed, block number).

    random.Random(seed) costs ~6 us to seed and ~1 us a draw; one hash gives 16 draws for ~1 us.
    Rendering is the sandbox's hot path (every listed page renders 200 documents), and its cost is
    added to every page a benchmark measures. The modulo's bias (below 1e-6 for these ranges) does
    not matter for synthetic data.
    """

    __slots__ = ("_block", "_next", "_seed", "_words")

    def __init__(self, seed: int) -> None:
        self._seed = seed.to_bytes(16, "little", signed=True)
        self._block = 0
        self._words: tuple[int, ...] = ()
        self._next = 0

    def word(self) -> int:
        if self._next == len(self._words):
            digest = hashlib.blake2b(self._seed + self._block.to_bytes(4, "little")).digest()
            self._words = _SIXTEEN_WORDS.unpack(digest)
            self._block += 1
            self._next = 0
        self._next += 1
        return self._words[self._next - 1]

    def randint(self, low: int, high: int) -> int:
        return low + self.word() % (high - low + 1)

    def random(self) -> float:
        return self.word() / 4_294_967_296

    def choice(self, options: Sequence[T]) -> T:
        return options[self.word() % len(options)]


_SIXTEEN_WORDS = struct.Struct("<16I")


def iso_micros(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"


def money(cents: int | None) -> str | None:
    if cents is None:
        return None
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


@dataclass(slots=True)
class ActivityRecord:
    id: str
    serial: int  # seeds everything about the activity that is not stored here
    start: int | None  # epoch seconds, None for an activity without a start date
    created_us: int
    updated_us: int
    revision: int = 0  # bumped by every update; changes tips, totals and metadata

    @property
    def key(self) -> tuple[int, str]:
        """Listing order: newest start first, then id; undated activities last."""
        return (NULL_START_KEY if self.start is None else -self.start, self.id)


@dataclass
class Account:
    id: str
    user: str
    employer: str
    link_item: str
    activity_type: str
    service_types: tuple[str, ...]
    created_us: int
    place: int
    records: dict[str, ActivityRecord] = field(default_factory=dict)
    keys: list[tuple[int, str]] = field(default_factory=list)  # sorted, see ActivityRecord.key
    fully_synced: bool = False
    # The account object's own state (GET /v1/accounts/{id}); 0 means "when created".
    updated_us: int = 0
    scanned_us: int | None = None  # the end of the last scan; None before the first
    connection_status: str = "connected"  # or "error"
    error_code: str | None = None
    connection_updated_us: int = 0


@dataclass
class User:
    id: str
    created_us: int
    external_metadata: dict[str, Any] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=list)


def render(account: Account, rec: ActivityRecord) -> dict[str, Any]:
    """The activity as Argyle's v1 API returns it. Pure: the same record gives the same document."""
    rng = Draws(rec.serial)
    kind = account.activity_type
    lat, lng, street, city, zone = PLACES[account.place]
    cancelled = rng.random() < 0.07
    if kind == "hourly":
        duration = rng.randint(4, 9) * 3600 + rng.choice((0, 1800))
    elif kind == "services":
        duration = rng.randint(1, 5) * 3600
    else:
        duration = rng.randint(6, 75) * 60
    if cancelled:
        duration = 0
    start = rec.start
    end = None if start is None or cancelled else start + duration

    miles_x100 = 0 if kind in ("hourly", "services") or cancelled else rng.randint(40, 2500)
    pay = (
        0 if cancelled else (duration * rng.randint(1500, 3000) // 3600 if kind == "hourly" else rng.randint(250, 4500))
    )
    fees = 0 if kind == "hourly" or cancelled else pay * rng.randint(10, 35) // 100
    bonus = rng.choice((0, 0, 0, 100, 250, 500)) if not cancelled else 0
    cancel_fee = rng.randint(300, 700) if cancelled and rng.random() < 0.5 else 0

    # The revision-dependent part: what a periodic scan changes (late tips, adjusted totals).
    vrng = Draws(rec.serial * 1_000_003 + rec.revision)
    tips = 0 if cancelled or kind == "hourly" else vrng.choice((0, 0, vrng.randint(50, 1200)))
    if rec.revision:
        tips += vrng.randint(25, 500)
    total = pay - fees + tips + bonus + cancel_fee
    hours = duration / 3600 if duration else 0
    rates = {
        "hour": round((total / 100) / hours, 2) if hours else None,
        "mile": round((total / 100) / (miles_x100 / 100), 2) if miles_x100 else None,
    }

    def place(dx: int, dy: int, number: int) -> dict[str, str]:
        return {
            "lat": f"{lat + dx / 1000:.6f}",
            "lng": f"{lng + dy / 1000:.6f}",
            "formatted_address": f"{number} {street}, {city}",
        }

    start_location = place(rng.randint(-60, 60), rng.randint(-60, 60), rng.randint(1, 999))
    end_location = None if cancelled else place(rng.randint(-60, 60), rng.randint(-60, 60), rng.randint(1, 999))

    stamps: dict[str, int | None] = dict.fromkeys(DATETIME_KEYS)
    if start is not None:
        if kind == "hourly":
            stamps["shift_start"] = start
            stamps["shift_end"] = end
            if end is not None and duration >= 6 * 3600:
                stamps["break_start"] = start + duration // 2
                stamps["break_end"] = start + duration // 2 + 1800
        else:
            stamps["request_at"] = start - rng.randint(60, 600)
            stamps["accept_at"] = start - rng.randint(10, 59)
            stamps["pickup_at"] = None if cancelled else start
            stamps["dropoff_at"] = end
            stamps["cancel_at"] = start + rng.randint(30, 300) if cancelled else None

    return {
        "id": rec.id,
        "account": account.id,
        "employer": account.employer,
        "link_item": account.link_item,
        "data_partner": account.link_item,
        "created_at": iso_micros(rec.created_us),
        "updated_at": iso_micros(rec.updated_us),
        "status": "cancelled" if cancelled else "completed",
        "type": kind,
        "num_tasks": 0 if cancelled else (rng.randint(1, 3) if kind == "delivery" else 1),
        "start_date": iso_seconds(start),
        "end_date": iso_seconds(end),
        "all_datetimes": {k: iso_seconds(v) for k, v in stamps.items()},
        "all_timestamps": stamps,
        "duration": duration,
        "timezone": zone,
        "earning_type": "work",
        "income": {
            "currency": "USD",
            "total_charge": None if kind == "hourly" else money(pay + tips + bonus + rng.randint(0, 900)),
            "fees": money(fees),
            "total": money(total),
            "pay": money(pay),
            "tips": money(tips),
            "bonus": money(bonus),
            "taxes": None,
        },
        "income_rates": rates,
        "start_location": start_location,
        "end_location": end_location,
        "route": None
        if end_location is None or kind in ("hourly", "services")
        else f"https://maps.sandbox.invalid/route/{rec.id}",
        "distance": money(miles_x100) if miles_x100 else None,
        "distance_unit": "miles" if miles_x100 else None,
        "circumstances": {
            "is_pool": kind == "rideshare" and rng.random() < 0.1,
            "is_rush": rng.random() < 0.2,
            "is_surge": kind == "rideshare" and rng.random() < 0.15,
            "position": None,
            "service_type": rng.choice(account.service_types),
        },
        "metadata": {"revision": rec.revision},
        "complete_data_available": True,
    }


def render_gig(account: Account, rec: ActivityRecord) -> dict[str, Any]:
    """The same record as Argyle's v2 API returns a gig (API-NOTES.md, "API v2"): `start_datetime`
    / `end_datetime`, `task_count`, `task_details`, `income` with `customer_price` and `other`, no
    v1-only fields (link_item, data_partner, all_timestamps, route, complete_data_available)."""
    doc = render(account, rec)
    income = doc.pop("income")
    stamps = doc.pop("all_timestamps")
    tasks = doc.pop("num_tasks")
    for legacy in ("link_item", "data_partner", "route", "complete_data_available"):
        doc.pop(legacy)
    gig: dict[str, Any] = {
        "id": doc.pop("id"),
        "account": doc.pop("account"),
        "start_datetime": doc.pop("start_date"),
        "end_datetime": doc.pop("end_date"),
        "task_count": tasks,
        "task_details": {"events": [], "orders": [{"id": f"order-{rec.serial}", "items": tasks}] if tasks else []},
        "income": {
            "currency": income["currency"],
            "total_charge": income["total_charge"],
            "customer_price": income["total_charge"],
            "fees": income["fees"],
            "total": income["total"],
            "pay": income["pay"],
            "tips": income["tips"],
            "bonus": income["bonus"],
            "other": "0.00" if stamps.get("cancel_at") is None else None,
        },
        **doc,
    }
    gig["all_datetimes"] = {k: v for k, v in doc["all_datetimes"].items() if k not in ("break_start", "break_end")}
    gig["all_datetimes"]["breaks"] = (
        [{"start": doc["all_datetimes"]["break_start"], "end": doc["all_datetimes"]["break_end"]}]
        if doc["all_datetimes"].get("break_start") else [])
    return gig


# Each version's shape of a record, by the version's objects ("activities" / "gigs").
_RENDERERS = {"activities": render, "gigs": render_gig}


def render_object(account: Account, rec: ActivityRecord, api: ApiVersion = V1) -> dict[str, Any]:
    return _RENDERERS[api.objects](account, rec)


# What Argyle says for a few connection error codes; any other snake_case code gets the generic
# message (Argyle adds codes, and tests may send codes the sandbox has never heard of).
CONNECTION_ERROR_MESSAGES: dict[str, str] = {
    "auth_required": "The account needs the user to log in again.",
    "invalid_credentials": "The login credentials are incorrect.",
    "expired_credentials": "The password has expired and must be changed with the employer.",
    "account_disabled": "The employer has disabled the account.",
    "mfa_timeout": "The user did not complete multi-factor authentication in time.",
    "system_error": "Argyle could not reach the employer's system.",
}


def connection_error_message(code: str) -> str:
    return CONNECTION_ERROR_MESSAGES.get(code, f"The connection failed ({code}).")


def render_account(account: Account, oldest: int | None, newest: int | None, api: ApiVersion = V1) -> dict[str, Any]:
    """The account object (GET /v1/accounts/{id}, an accounts.* webhook's data.resource).
    `oldest`/`newest` are its dated activities' first and last start. `availability.gigs` is v2's;
    v1's `availability.activities` is modelled on it."""
    failed = account.connection_status == "error"
    return {
        "id": account.id,
        "user": account.user,
        "employer": account.employer,
        "link_item": account.link_item,
        "data_partner": account.link_item,
        "created_at": iso_micros(account.created_us),
        "updated_at": iso_micros(account.updated_us or account.created_us),
        "scanned_at": None if account.scanned_us is None else iso_micros(account.scanned_us),
        "connection": {
            "status": account.connection_status,
            "error_code": account.error_code if failed else None,
            "error_message": connection_error_message(account.error_code) if failed and account.error_code else None,
            "updated_at": iso_micros(account.connection_updated_us or account.created_us),
        },
        "availability": {
            api.objects: {
                "status": "synced" if account.fully_synced else "failed",
                "updated_at": None if account.scanned_us is None else iso_micros(account.scanned_us),
                "available_count": len(account.records),
                "available_from": iso_seconds(oldest),
                "available_to": iso_seconds(newest),
            }
        },
    }
