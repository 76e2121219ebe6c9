"""Switchable misbehaviour, for tests and demos. Set attributes on `SandboxServer.faults` (or
POST /_sandbox/faults with the same names as JSON); `reset()` switches everything off.

API faults apply to /v1 routes only, counted per request in arrival order:
- rate_limit_next / fail_next: the next N requests answer 429 / `fail_status`, then normal again.
- rate_limit_every / fail_every: every Nth request answers 429 / `fail_status` (0 = never).
- retry_after: the Retry-After header of a 429 (a string, as HTTP carries it; None omits it).
- rate_limit_per_second: Argyle's own rate limit (0 = none): a token bucket of this many requests
  per second (holding one second's worth); a request beyond it answers 429 with a Retry-After of
  the whole seconds until a token is back (at least 1). `rate_limited` counts those 429s.
- delay_seconds: every answer waits this long first (slow answers, client read timeouts).
- foreign_next_host: `next` links name this origin (e.g. "http://127.0.0.1:9999") instead of ours.
- bare_webhook_list: GET /v1/webhooks answers a bare JSON array, like the docs' example.
A scan during a listing (what Argyle's periodic scans do to a long listing):
- page_shift_remove / page_shift_add: before answering an activities page that continues a
  listing (offset > 0, or a cursor), remove / add this many of the account's activities that
  sort before the requested page, and send the webhooks Argyle would.
- page_shift_times: how many such page requests still shift (each one counts down; 0 = off).
- page_shift_account: only listings of this account shift (None = any account's).
Delivery faults apply to webhooks the scenario sends:
- drop_next_deliveries: the next N deliveries are never sent (recorded as dropped).
- drop_every_delivery: every Nth delivery is never sent (0 = never), counted from when set.
- drop_events: the two above count and drop only these events (None = every event).
- duplicate_deliveries: each webhook is delivered 1 + N times.
- reorder_deliveries: the webhooks of one scenario step are delivered in reverse order.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

_DROP_FIELDS = frozenset({"drop_next_deliveries", "drop_every_delivery", "drop_events"})


@dataclass
class Faults:
    rate_limit_next: int = 0
    rate_limit_every: int = 0
    retry_after: str | None = "1"
    fail_next: int = 0
    fail_every: int = 0
    fail_status: int = 500
    delay_seconds: float = 0.0
    foreign_next_host: str | None = None
    bare_webhook_list: bool = False
    page_shift_remove: int = 0
    page_shift_add: int = 0
    page_shift_times: int = 0
    page_shift_account: str | None = None
    drop_next_deliveries: int = 0
    drop_every_delivery: int = 0
    drop_events: list[str] | None = None
    duplicate_deliveries: int = 0
    reorder_deliveries: bool = False
    rate_limit_per_second: float = 0.0
    requests_seen: int = 0  # /v1 requests counted so far (read-only in spirit)
    rate_limited: int = 0  # requests answered 429 by rate_limit_per_second (read-only in spirit)
    _bucket: list[float] = field(default_factory=list, repr=False, compare=False)  # [tokens, at]
    _clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)  # tests hold it still
    _drop_counted: int = field(default=0, repr=False, compare=False)  # deliveries drop_events matched
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def decide(self) -> int | None:
        """Count one API request; the status to answer instead of the real one, if any."""
        with self._lock:
            self.requests_seen += 1
            n = self.requests_seen
            if self.rate_limit_per_second > 0 and not self._take_token():
                self.rate_limited += 1
                return 429
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return 429
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
            if self.rate_limit_every and n % self.rate_limit_every == 0:
                return 429
            if self.fail_every and n % self.fail_every == 0:
                return self.fail_status
            return None

    def _take_token(self) -> bool:
        rate, now = self.rate_limit_per_second, self._clock()
        if not self._bucket:
            self._bucket[:] = [rate, now]
        tokens = min(rate, self._bucket[0] + (now - self._bucket[1]) * rate)
        self._bucket[:] = [tokens, now]
        if tokens < 1.0:
            return False
        self._bucket[0] = tokens - 1.0
        return True

    def rate_limit_retry_after(self) -> str:
        """Whole seconds until the rate limit has a token again (HTTP's Retry-After), at least 1."""
        with self._lock:
            missing = 1.0 - (self._bucket[0] if self._bucket else 0.0)
            return str(max(1, math.ceil(missing / self.rate_limit_per_second)))

    def take_page_shift(self, account_id: str) -> tuple[int, int] | None:
        """For a page request continuing a listing of `account_id`: (remove, add) when the scan
        fault fires on it (counting one of page_shift_times down), else None."""
        with self._lock:
            if self.page_shift_times <= 0 or not (self.page_shift_remove or self.page_shift_add):
                return None
            if self.page_shift_account is not None and self.page_shift_account != account_id:
                return None
            self.page_shift_times -= 1
            return self.page_shift_remove, self.page_shift_add

    def drops(self, event: str) -> bool:
        """Count one delivery of `event`; True when it is to be forgotten, never sent."""
        with self._lock:
            if self.drop_events is not None and event not in self.drop_events:
                return False
            self._drop_counted += 1
            if self.drop_next_deliveries > 0:
                self.drop_next_deliveries -= 1
                return True
            return bool(self.drop_every_delivery) and self._drop_counted % self.drop_every_delivery == 0

    def update(self, changes: dict[str, Any]) -> None:
        """Set fields by name. Unknown names, wrong types and negative counts are errors, raised
        before anything changes, so a typo is not silently ignored."""
        hints = _field_types()
        unknown = sorted(set(changes) - set(hints))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(sorted(hints))}")
        for name, value in changes.items():
            try:
                TypeAdapter(hints[name]).validate_python(value, strict=True)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise ValueError(f"fault {name}: {reason} (got {value!r})") from None
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"fault {name}: must be 0 or more (got {value!r})")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)
            if _DROP_FIELDS & set(changes):
                self._drop_counted = 0

    def reset(self) -> None:
        fresh = Faults()
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_") and f.name not in ("requests_seen", "rate_limited"):
                    setattr(self, f.name, getattr(fresh, f.name))
            self._drop_counted = 0
            self._bucket.clear()

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@cache
def _field_types() -> dict[str, Any]:
    """The public fields' types, as pydantic validates them."""
    hints = get_type_hints(Faults)
    return {f.name: hints[f.name] for f in fields(Faults) if not f.name.startswith("_")}
