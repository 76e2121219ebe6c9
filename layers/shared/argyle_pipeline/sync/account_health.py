"""How healthy each account's copy is, from its state item alone (no AWS here).

The state item (aws/sync_state_store.py) records what the sync saw: the last webhook received, the
last successful sync and what it covered, "data as of" (when the stored copy was last known to
equal Argyle), the last failure, the latest counts and the reconciles' drift. These rules turn that
into problems, worst first, for `argyle-synced health` and the scheduled staleness check:

- failing: the last failure is newer than the last success (or nothing ever succeeded).
- stale: connected at Argyle (or status unknown) and no successful sync for `stale_after_seconds`
  ("alert on poll age, not error rate": a sync that silently stops raises no error).
- behind_scan: Argyle's `scanned_at` (accounts.updated) is newer than our "data as of" by more than
  `scan_behind_seconds`: Argyle scanned, and we have not caught up.
- drifted: the last reconcile found drift, or the stored live count differs from Argyle's count.
- disconnected: Argyle reports the account's connection in error (not ours to fix; listed last).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from argyle_pipeline.timestamps import parse_timestamp

# Worst first: the order of `problems`, and of `argyle-synced health`'s rows.
PROBLEMS = ("failing", "stale", "behind_scan", "drifted", "disconnected")
_CONNECTED = ("connected", None)


@dataclass(frozen=True)
class HealthThresholds:
    stale_after_seconds: int = 24 * 3600
    scan_behind_seconds: int = 6 * 3600


@dataclass
class AccountHealth:
    account: str
    user: str | None = None
    connection_status: str | None = None
    last_webhook_at_ms: int | None = None
    last_webhook_event: str | None = None
    last_sync: dict[str, Any] | None = None
    data_as_of: str | None = None
    scanned_at: str | None = None
    stored_live: int | None = None
    argyle_count: int | None = None
    last_failure: dict[str, Any] | None = None
    last_reconcile: dict[str, Any] | None = None
    drift_totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rank(self) -> tuple[int, ...]:
        """Sorts worst first: by the worst problem, then by how many."""
        worst = min((PROBLEMS.index(p) for p in self.problems), default=len(PROBLEMS))
        return (worst, -len(self.problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_timestamp(str(value))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def assess(state: Mapping[str, Any], now: datetime, thresholds: HealthThresholds = HealthThresholds()) -> AccountHealth:
    """The account's health from its state item (as sync_state_store reads it)."""
    last_sync = dict(state["last_sync"]) if isinstance(state.get("last_sync"), Mapping) else None
    last_failure = dict(state["last_failure"]) if isinstance(state.get("last_failure"), Mapping) else None
    counts = state.get("last_counts") if isinstance(state.get("last_counts"), Mapping) else {}
    webhook_times = [(_int(state.get(k)), state.get(e)) for k, e in
                     (("last_event_received_at_ms", "last_event"),
                      ("last_account_event_received_at_ms", "last_account_event")) if state.get(k) is not None]
    last_webhook = max(webhook_times, default=(None, None), key=lambda pair: pair[0] or 0)
    argyle_count = _int(counts.get("argyle_count")) if counts else None
    if argyle_count is None:
        argyle_count = _int(state.get("available_count"))
    health = AccountHealth(
        account=str(state.get("account_id", "")), user=state.get("user_id"),
        connection_status=state.get("connection_status"),
        last_webhook_at_ms=last_webhook[0], last_webhook_event=last_webhook[1],
        last_sync=last_sync, data_as_of=state.get("data_as_of"), scanned_at=state.get("scanned_at"),
        stored_live=_int(counts.get("stored_live")) if counts else None, argyle_count=argyle_count,
        last_failure=last_failure,
        last_reconcile=dict(state["last_reconcile"]) if isinstance(state.get("last_reconcile"), Mapping) else None,
        drift_totals={k.removeprefix("drift_").removesuffix("_total"): int(v) for k, v in state.items()
                      if k.startswith("drift_") and k.endswith("_total")},
    )
    health.problems = problems(health, now, thresholds)
    return health


def problems(health: AccountHealth, now: datetime, thresholds: HealthThresholds) -> list[str]:
    found = []
    synced_at = _time((health.last_sync or {}).get("at"))
    failed_at = _time((health.last_failure or {}).get("at"))
    if failed_at is not None and (synced_at is None or failed_at > synced_at):
        found.append("failing")
    if health.connection_status in _CONNECTED:
        # An account never synced is stale from the moment we first heard of it; its first
        # webhook's receive time stands in for "since when".
        since = synced_at
        if since is None and health.last_webhook_at_ms is not None:
            since = datetime.fromtimestamp(health.last_webhook_at_ms / 1000, now.tzinfo)
        if since is not None and (now - since).total_seconds() > thresholds.stale_after_seconds:
            found.append("stale")
    scanned, as_of = _time(health.scanned_at), _time(health.data_as_of)
    if scanned is not None and (as_of is None or (scanned - as_of).total_seconds() > thresholds.scan_behind_seconds):
        found.append("behind_scan")
    drift = (health.last_reconcile or {}).get("drift") or {}
    counts_differ = (health.stored_live is not None and health.argyle_count is not None
                     and health.stored_live != health.argyle_count)
    if any(int(n) for n in drift.values()) or counts_differ:
        found.append("drifted")
    if health.connection_status not in _CONNECTED:
        found.append("disconnected")
    return found


def worst_first(healths: Iterable[AccountHealth]) -> list[AccountHealth]:
    return sorted(healths, key=lambda h: (h.rank, h.account))


def problem_counts(healths: Iterable[AccountHealth]) -> dict[str, int]:
    """How many accounts have each problem: the scheduled check's metrics."""
    counts = dict.fromkeys(PROBLEMS, 0)
    for health in healths:
        for problem in health.problems:
            counts[problem] += 1
    return counts
