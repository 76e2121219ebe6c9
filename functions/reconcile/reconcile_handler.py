"""Scheduled (template.yaml, ReconcileFunction's Schedule): queue a reconcile of every known account.

Invoked by hand with `{"request_id": "...", "scope": "full" | "recent"}` it runs now, outside the
schedule's period (the request id keeps it apart from the period's own run).

Thin on purpose: which accounts and which scope is argyle_pipeline.sync.reconcile_schedule; the
reconciling itself is done by the sync function, in each account's message group
(argyle_pipeline.sync.reconcile). This function reads account ids and sends messages, nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from argyle_pipeline.argyle.api_versions import api_version
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.sync.reconcile_schedule import ReconcileSchedule, reconcile_message

SERVICE = "argyle-reconcile"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="ArgyleSync", service=SERVICE)
_CHUNK = 1_000  # accounts read, then sent, per round: memory stays flat whatever the number of accounts


def schedule_from_environment() -> ReconcileSchedule:
    api = api_version(os.environ.get("ARGYLE_API_VERSION"))
    return ReconcileSchedule(interval_seconds=int(os.environ.get("RECONCILE_INTERVAL_MINUTES", "1440")) * 60,
                             full_every_days=int(os.environ.get("RECONCILE_FULL_EVERY_DAYS", "7")),
                             counts=api.list_counts)


def queue_reconciles(state: SyncStateStore, queue: EventQueue, schedule: ReconcileSchedule, now: float,
                     correlation_id: str, *, request_id: str | None = None,
                     scope: Literal["full", "recent"] | None = None) -> dict[str, int]:
    queued = {"recent": 0, "full": 0, "in_error": 0}

    def account_ids() -> Iterator[str]:
        for account, summary in state.account_summaries():
            if summary.get("connection_status") == "error":
                queued["in_error"] += 1  # Argyle cannot reach the employer for this account
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
    queued = queue_reconciles(state, queue, schedule_from_environment(), time.time(),
                              getattr(context, "aws_request_id", "") or "scheduled", request_id=request_id, scope=scope)
    logger.info("reconciles queued", recent=queued["recent"], full=queued["full"], accounts_in_error=queued["in_error"])
    metrics.add_metric(name="ReconcilesQueued", unit=MetricUnit.Count, value=queued["recent"] + queued["full"])
    # A gauge, once per run: how many accounts Argyle last reported in connection status "error".
    metrics.add_metric(name="AccountsInError", unit=MetricUnit.Count, value=queued["in_error"])
    return queued
