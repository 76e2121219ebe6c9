"""Scheduled (template.yaml, ReconcileFunction's Schedule): queue a reconcile of every known account.

Invoked by hand with `{"request_id": "...", "scope": "full" | "recent"}` it runs now, outside the
schedule's period (the request id keeps it apart from the period's own run).

Thin on purpose: which accounts and which scope is argyle_pipeline.sync.reconcile_schedule; the
reconciling itself is done by the sync function, in each account's message group
(argyle_pipeline.sync.reconcile). This function reads account ids and sends messages; then, on the
same schedule, it counts the accounts with each health problem (sync/account_health.py) and checks
Argyle's webhook subscriptions for this stack's URL (sync/subscription_check.py), as metrics with
alarms (docs/runbook.md, "Stale accounts" and "Webhook subscriptions").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.sync.account_health import HealthThresholds, assess, problem_counts
from argyle_pipeline.sync.reconcile_schedule import ReconcileSchedule, reconcile_message
from argyle_pipeline.sync.subscription_check import SubscriptionReport, check_subscriptions

SERVICE = "argyle-reconcile"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="ArgyleSync", service=SERVICE)
_CHUNK = 1_000  # accounts read, then sent, per round: memory stays flat whatever the number of accounts
# What the health check reads of each state item (the Lookups index projects only status).
HEALTH_ATTRIBUTES = ("account_id", "status", "connection_status", "last_sync", "data_as_of", "scanned_at",
                     "last_failure", "last_counts", "available_count", "last_reconcile", "last_event",
                     "last_event_received_at_ms", "last_account_event", "last_account_event_received_at_ms")
# The metric of each health problem: how many accounts have it, once per run (a gauge).
HEALTH_METRICS = {"stale": "AccountsStale", "behind_scan": "AccountsBehindScan", "failing": "AccountsFailing",
                  "drifted": "AccountsDrifted"}


def schedule_from_environment() -> ReconcileSchedule:
    return ReconcileSchedule(interval_seconds=int(os.environ.get("RECONCILE_INTERVAL_MINUTES", "1440")) * 60,
                             full_every_days=int(os.environ.get("RECONCILE_FULL_EVERY_DAYS", "7")))


def thresholds_from_environment() -> HealthThresholds:
    return HealthThresholds(stale_after_seconds=int(float(os.environ.get("STALE_AFTER_HOURS", "24")) * 3600),
                            scan_behind_seconds=int(float(os.environ.get("SCAN_BEHIND_HOURS", "6")) * 3600))


def count_health_problems(state: SyncStateStore, account_ids: list[str], now: float,
                          thresholds: HealthThresholds) -> dict[str, int]:
    """How many accounts have each problem (account_health.PROBLEMS), reading their state items
    100 at a time, `_CHUNK` accounts per round."""
    counts: dict[str, int] = {}
    moment = datetime.fromtimestamp(now, UTC)
    for start in range(0, len(account_ids), _CHUNK):
        states = state.account_states(account_ids[start:start + _CHUNK], HEALTH_ATTRIBUTES)
        for problem, n in problem_counts(assess(s, moment, thresholds) for s in states).items():
            counts[problem] = counts.get(problem, 0) + n
    return counts


def subscription_report(webhook_url: str, list_webhooks: Callable[[], list[Any]]) -> SubscriptionReport:
    return check_subscriptions(list_webhooks(), webhook_url)


def _argyle_webhooks() -> list[Any]:
    from argyle_pipeline.argyle.client import ArgyleClient
    from argyle_pipeline.aws.secret_values import argyle_credentials

    secret_id = os.environ["ARGYLE_CREDENTIALS_SECRET_ID"]
    client = ArgyleClient(os.environ.get("ARGYLE_API_URL") or "https://api.argyle.com/v1",
                          lambda: argyle_credentials(secret_id), max_attempts=3, timeout=30.0)
    return client.list_webhooks()


def queue_reconciles(state: SyncStateStore, queue: EventQueue, schedule: ReconcileSchedule, now: float,
                     correlation_id: str, *, request_id: str | None = None,
                     scope: Literal["full", "recent"] | None = None,
                     seen: list[str] | None = None) -> dict[str, int]:
    """One reconcile per known account; `seen` collects the account ids (for the health check)."""
    queued = {"recent": 0, "full": 0, "in_error": 0}

    def account_ids() -> Iterator[str]:
        for account, summary in state.account_summaries():
            if summary.get("connection_status") == "error":
                queued["in_error"] += 1  # Argyle cannot reach the employer for this account
            if seen is not None:
                seen.append(account)
            yield account

    batch = []
    for job in schedule.requests(account_ids(), now, request_id=request_id, scope=scope):
        batch.append(reconcile_message(job, correlation_id, int(now * 1000)))
        queued[job.scope] += 1
        if len(batch) >= _CHUNK:
            queue.send_many(batch)
            batch = []
    if batch:
        queue.send_many(batch)
    return queued


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    request_id = event.get("request_id") if isinstance(event, dict) else None
    scope = event.get("scope") if isinstance(event, dict) else None
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) < 8):
        raise ValueError("request_id must be a string of at least 8 characters")
    if scope not in (None, "full", "recent"):
        raise ValueError("scope must be 'full' or 'recent'")
    state, queue = SyncStateStore(os.environ["SYNC_STATE_TABLE"]), EventQueue(os.environ["EVENTS_QUEUE_URL"])
    now, accounts = time.time(), list[str]()
    queued = queue_reconciles(state, queue, schedule_from_environment(), now,
                              getattr(context, "aws_request_id", "") or "scheduled", request_id=request_id, scope=scope,
                              seen=accounts)
    logger.info("reconciles queued", recent=queued["recent"], full=queued["full"], accounts_in_error=queued["in_error"])
    metrics.add_metric(name="ReconcilesQueued", unit=MetricUnit.Count, value=queued["recent"] + queued["full"])
    # A gauge, once per run: how many accounts Argyle last reported in connection status "error".
    metrics.add_metric(name="AccountsInError", unit=MetricUnit.Count, value=queued["in_error"])
    problems = count_health_problems(state, accounts, now, thresholds_from_environment())
    logger.info("account health", accounts=len(accounts), problems=problems)
    for problem, name in HEALTH_METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=problems.get(problem, 0))
    webhook_url = os.environ.get("WEBHOOK_URL", "")
    if webhook_url:
        try:
            report = subscription_report(webhook_url, _argyle_webhooks)
        except Exception as exc:
            # Argyle unreachable or the keys refused: the reconciles are queued already; the next
            # run checks again, and the alarm on this metric says the check itself is failing.
            logger.error("could not read Argyle's webhook subscriptions", error=type(exc).__name__,
                         reason=str(exc)[:300])
            metrics.add_metric(name="WebhookSubscriptionCheckFailures", unit=MetricUnit.Count, value=1)
        else:
            if not report.ok:
                logger.warning("Argyle no longer delivers every event the sync needs to this stack: run "
                               "`argyle-webhooks doctor`", **report.as_dict())
            metrics.add_metric(name="WebhookEventsUnsubscribed", unit=MetricUnit.Count, value=len(report.missing))
    return queued
