"""Switchable misbehaviour, for tests and demos. Set attributes on `SandboxServer.faults` (or
POST /_sandbox/faults with the same names as JSON); `reset()` switches everything off.

API faults apply to /v1 routes only, counted per request in arrival order:
- rate_limit_next / fail_next: the next N requests answer 429 / `fail_status`, then normal again.
- rate_limit_every / fail_every: every Nth request answers 429 / `fail_status` (0 = never).
- retry_after: the Retry-After header of a 429 (a string, as HTTP carries it; None omits it).
- delay_seconds: every answer waits this long first (slow answers, client read timeouts).
- foreign_next_host: `next` links name this origin (e.g. "http://127.0.0.1:9999") instead of ours.
- bare_webhook_list: GET /v1/webhooks answers a bare JSON array, like the docs' example.
Delivery faults apply to webhooks the scenario sends:
- duplicate_deliveries: each webhook is delivered 1 + N times.
- reorder_deliveries: the webhooks of one scenario step are delivered in reverse order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any


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
    duplicate_deliveries: int = 0
    reorder_deliveries: bool = False
    requests_seen: int = 0  # /v1 requests counted so far (read-only in spirit)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def decide(self) -> int | None:
        """Count one API request; the status to answer instead of the real one, if any."""
        with self._lock:
            self.requests_seen += 1
            n = self.requests_seen
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

    def update(self, changes: dict[str, Any]) -> None:
        """Set fields by name (unknown names are an error, so a typo is not silently ignored)."""
        known = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def reset(self) -> None:
        fresh = Faults()
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_") and f.name != "requests_seen":
                    setattr(self, f.name, getattr(fresh, f.name))

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
