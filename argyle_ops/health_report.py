"""`argyle-synced health`: every account's health, worst first, as a table for a person or JSON for
a machine. The rules are argyle_pipeline.sync.account_health; this module reads and formats."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from argyle_pipeline.sync.account_health import AccountHealth, HealthThresholds, assess, worst_first

_PURGED = ("purging", "purged")
HEADERS = ["ACCOUNT", "PROBLEMS", "LAST WEBHOOK", "LAST SYNC", "DATA AS OF", "STORED/ARGYLE", "LAST FAILURE"]


def account_healths(states: Iterable[Mapping[str, Any]], now: datetime,
                    thresholds: HealthThresholds) -> list[AccountHealth]:
    """Every (not purged) account's health, worst first."""
    return worst_first(assess(s, now, thresholds) for s in states if s.get("status") not in _PURGED)


def as_json(healths: list[AccountHealth]) -> list[dict[str, Any]]:
    return [h.as_dict() for h in healths]


def _short(value: Any) -> str:
    return str(value).replace("T", " ")[:19] if value else "-"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def as_table(healths: list[AccountHealth]) -> str:
    rows = []
    for h in healths:
        sync = h.last_sync or {}
        failure = h.last_failure or {}
        counts = f"{_count(h.stored_live)}/{_count(h.argyle_count)}"
        failed = (f"{_short(failure.get('at'))} attempt {failure.get('attempts')}: {failure.get('reason', '')}"[:90]
                  if failure else "-")
        webhook = "-"
        if h.last_webhook_at_ms is not None:
            received = datetime.fromtimestamp(h.last_webhook_at_ms / 1000, UTC).isoformat()
            webhook = f"{_short(received)} {h.last_webhook_event or ''}"
        rows.append([h.account, ",".join(h.problems) or "ok", webhook.strip(),
                     f"{_short(sync.get('at'))} {sync.get('event', '')}".strip(), _short(h.data_as_of), counts, failed])
    widths = [max(len(head), *(len(r[i]) for r in rows)) if rows else len(head) for i, head in enumerate(HEADERS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def now_utc() -> datetime:
    return datetime.now(UTC)
