"""Whether Argyle still delivers every event the sync needs to this stack's URL (no AWS here).

A subscription Argyle deleted or disabled (after failed deliveries, say) raises no error anywhere:
webhooks just stop. The scheduled check (functions/reconcile) turns what is missing into a metric
and an alarm; `argyle-webhooks doctor` prints the same report for a person, with the fix.

Argyle documents no status field on a subscription; one that carries `status` other than
active/enabled, or `active` / `enabled` false, is counted as disabled, should Argyle add one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from argyle_pipeline.argyle.webhook_events import ACCOUNT_STATUS_EVENT, SYNC_EVENTS

# What subscribe-stack subscribes: every event the sync handles, and accounts.updated (with the
# account object) in a subscription of its own.
REQUIRED_EVENTS: tuple[str, ...] = (*SYNC_EVENTS, ACCOUNT_STATUS_EVENT)


def is_disabled(subscription: Any) -> bool:
    extra = getattr(subscription, "model_extra", None) or {}
    status = extra.get("status")
    if isinstance(status, str) and status.lower() not in ("active", "enabled"):
        return True
    return extra.get("active") is False or extra.get("enabled") is False


@dataclass
class SubscriptionReport:
    webhook_url: str
    required: list[str]
    missing: list[str] = field(default_factory=list)  # no active subscription of the URL delivers it
    disabled: list[str] = field(default_factory=list)  # ids of the URL's disabled subscriptions
    subscriptions: list[str] = field(default_factory=list)  # ids of the URL's active subscriptions

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {"webhook_url": self.webhook_url, "ok": self.ok, "missing_events": self.missing,
                "disabled_subscriptions": self.disabled, "active_subscriptions": self.subscriptions,
                "required_events": self.required}


def check_subscriptions(subscriptions: Iterable[Any], webhook_url: str,
                        required: Iterable[str] = REQUIRED_EVENTS) -> SubscriptionReport:
    """`subscriptions`: Argyle's webhook objects (argyle.client.WebhookSubscription)."""
    report = SubscriptionReport(webhook_url, list(required))
    delivered: set[str] = set()
    for sub in subscriptions:
        if _same_url(getattr(sub, "url", None), webhook_url):
            if is_disabled(sub):
                report.disabled.append(sub.id)
                continue
            report.subscriptions.append(sub.id)
            delivered.update(sub.events)
    report.missing = [] if "*" in delivered else [e for e in report.required if e not in delivered]
    return report


def _same_url(url: str | None, webhook_url: str) -> bool:
    return bool(url) and str(url).rstrip("/") == webhook_url.rstrip("/")
