"""EventsQueue -> Argyle API -> DynamoDB: applies each queued webhook (and sync continuation).

Thin on purpose: the rules are in argyle_pipeline.sync.dispatch, DynamoDB is in activity_store and
sync_state_store, SQS in event_queue. This module wires them, once per container, and adds
Powertools: FIFO batch processing with partial failures, idempotency, logs, metrics, traces.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.exceptions import (
    SQSFifoCircuitBreakerError,
    SQSFifoMessageGroupCircuitBreakerError,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from argyle_pipeline.argyle.client import ArgyleAuthError, ArgyleClient, RetryWait
from argyle_pipeline.argyle.request_budget import SharedRequestBudget
from argyle_pipeline.argyle.webhook_events import MalformedWebhook
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.argyle_budget_store import ArgyleBudgetStore
from argyle_pipeline.aws.change_event_bus import ChangeEventBus
from argyle_pipeline.aws.dynamodb_client import sync_dynamodb_client
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.secret_values import argyle_credentials
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.sync.change_events import change_events, should_publish
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync, run_unless_covered
from argyle_pipeline.sync.messages import (
    PURGE_EVENT,
    RECONCILE_EVENT,
    RESYNC_EVENT,
    ParsedMessage,
    SyncMessage,
    message_from_sqs_record,
    parse_message,
)
from argyle_pipeline.sync.retry_schedule import RetrySchedule
from argyle_pipeline.sync.settings import SyncSettings, sync_settings

SERVICE = "argyle-sync"
NAMESPACE = "ArgyleSync"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
# FIFO: a failed record fails the records after it in the same message group (their order
# matters), while other groups' records still commit.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every record failed is answered like a partial failure instead of raised, so each
# record still gets its retry delay (a raised batch would wait out the queue's 90-minute timeout).
processor.raise_on_entire_batch_failure = False
_SKIPPED_BEHIND_FAILURE = (SQSFifoCircuitBreakerError, SQSFifoMessageGroupCircuitBreakerError)
_NOT_WEBHOOKS = (RECONCILE_EVENT, PURGE_EVENT, RESYNC_EVENT)
_PER_RECORD_KEYS = ["correlation_id", "message_id", "group_id", "event_name", "dedupe_key"]


@dataclass
class SyncRuntime:
    """Everything made once per container: AWS clients, the Argyle clients and the idempotent
    processing function. Tests build one around their own fakes with `set_runtime`."""

    sync: ActivitySync
    process_once: Callable[..., dict[str, Any]]
    idempotency_config: IdempotencyConfig
    queue: EventQueue
    retry_schedule: RetrySchedule
    # The stack's shared Argyle rate; its waits end this long before the invocation's timeout.
    argyle_budget: SharedRequestBudget | None = None
    budget_reserve_ms: int = 60_000
    state: SyncStateStore | None = None  # where a failed record's note goes (the account's health)
    change_bus: ChangeEventBus | None = None  # change events, when PublishChangeEvents is on


_runtime: SyncRuntime | None = None


def build_runtime(settings: SyncSettings, *, argyle: Any = None, fetchers: list[Any] | None = None,
                  dynamodb: Any = None, sqs: Any = None, idempotency_dynamodb: Any = None,
                  sleep: Callable[[float], None] | None = None, events: Any = None,
                  budget: SharedRequestBudget | None = None) -> SyncRuntime:
    """The per-container objects; each argument replaces what would be made from `settings`."""
    import urllib3

    if dynamodb is None:
        # Retries throttling and transaction conflicts; what still fails is raised and SQS retries.
        dynamodb = sync_dynamodb_client()
    if argyle is None:
        def credentials() -> Any:  # Powertools caches the secret; a rotation is picked up within max_age
            return argyle_credentials(settings.argyle_credentials_secret_id, settings.secret_max_age_seconds)

        # One client per fetching thread: the GETs' threads, or a large listing's windows.
        threads = max(settings.fetch_concurrency, settings.listing_windows)
        pool = urllib3.PoolManager(retries=False, maxsize=threads + 1)
        if budget is None and settings.argyle_requests_per_second > 0:
            budget = SharedRequestBudget(ArgyleBudgetStore(settings.sync_state_table, dynamodb),
                                         settings.argyle_requests_per_second, shards=settings.argyle_budget_shards)
        clients = [ArgyleClient(settings.argyle_api_url, credentials,
                                timeout=settings.argyle_timeout_seconds,
                                max_attempts=settings.argyle_max_attempts,
                                max_pages=settings.argyle_max_pages,
                                page_limit=settings.argyle_page_limit, pool=pool, on_retry=_log_argyle_wait,
                                api=settings.argyle_api,
                                budget=budget)
                   for _ in range(threads + 1)]
        argyle, fetchers = clients[0], clients[1:]
    queue = EventQueue(settings.queue_url, sqs)
    state = SyncStateStore(settings.sync_state_table, dynamodb)
    sync = ActivitySync(
        argyle,
        ActivityStore(settings.activities_table, dynamodb, tombstone_seconds=settings.tombstone_seconds,
                      retention_seconds=settings.activity_retention_seconds,
                      max_rounds=settings.dynamodb_max_rounds, sleep=sleep or time.sleep),
        state,
        queue,
        SyncOptions(continuation_margin_ms=settings.continuation_margin_ms,
                    event_archive_seconds=settings.event_archive_seconds,
                    full_sync_whole_account=settings.full_sync_whole_account,
                    page_limit=settings.argyle_page_limit,
                    changes_per_part=settings.changes_per_part,
                    reconcile_recent_days=settings.reconcile_recent_days,
                    api=settings.argyle_api,
                    track_changes=bool(settings.change_event_bus),
                    listing_windows=settings.listing_windows,
                    window_threshold=settings.listing_window_threshold),
        fetchers=fetchers or [],
    )
    config = IdempotencyConfig(
        event_key_jmespath="dedupe_key",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.idempotency_seconds,
        # A redelivery of a completed event returns the stored outcome, marked so it is counted apart.
        response_hook=lambda response, _record: {**response, "duplicate": True},
    )
    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table,
                                           boto3_client=idempotency_dynamodb or dynamodb)

    # key_prefix: the record's id does not depend on the function's name, so a redeploy under
    # another name still recognises what was already synced.
    @idempotent_function(data_keyword_argument="key", persistence_store=persistence, config=config,
                         key_prefix="argyle-sync")
    def process_once(*, key: dict[str, str], message: SyncMessage, parsed: ParsedMessage,
                     remaining_ms: Callable[[], int]) -> dict[str, Any]:
        return sync.process(message, parsed, remaining_ms).as_dict()

    return SyncRuntime(sync=sync, process_once=process_once, idempotency_config=config, queue=queue,
                       retry_schedule=settings.retry_schedule, state=state,
                       change_bus=ChangeEventBus(settings.change_event_bus, events) if settings.change_event_bus
                       else None, argyle_budget=budget, budget_reserve_ms=settings.continuation_margin_ms // 2)


def runtime() -> SyncRuntime:
    global _runtime
    if _runtime is None:
        _runtime = build_runtime(sync_settings())
        # The modules, clients and service models live as long as the container: out of the
        # collector's reach, a collection during a large listing walks only the listing's objects.
        gc.freeze()
    return _runtime


def set_runtime(value: SyncRuntime | None) -> None:
    """Replace (or with None, forget) the per-container objects; settings are re-read too."""
    global _runtime
    _runtime = value
    sync_settings.cache_clear()


@tracer.capture_method(capture_response=False)
def handle_record(record: SQSRecord, lambda_context: Any = None) -> dict[str, Any]:
    rt = runtime()
    message = message_from_sqs_record(record.raw_event)
    logger.append_keys(correlation_id=message.correlation_id, message_id=message.message_id,
                       group_id=message.group_id)
    retries_before = rt.sync.argyle_retries
    try:
        try:
            parsed = parse_message(message)
        except MalformedWebhook as exc:
            # Retrying cannot fix it: after maxReceiveCount it lands in the DLQ for a human.
            logger.error("message is not a webhook the sync can read", reason=str(exc))
            metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
            raise
        logger.append_keys(event_name=parsed.event, dedupe_key=parsed.idempotency_key)
        remaining_ms = lambda_context.get_remaining_time_in_millis if lambda_context else (lambda: 900_000)
        if rt.argyle_budget is not None:
            # Waiting for Argyle budget stops short of the timeout: the work is handed on instead.
            reserve = rt.budget_reserve_ms
            rt.argyle_budget.set_deadline(lambda: time.time() + (remaining_ms() - reserve) / 1000)
        try:
            outcome = run_unless_covered(parsed, message, lambda run: rt.process_once(
                key={"dedupe_key": run.run_key}, message=message, parsed=run, remaining_ms=remaining_ms))
            if outcome.get("runs_before"):
                # Same body, received after its last run began reading Argyle: possibly a newer change.
                logger.info("identical body received after its last run began: processed again",
                            runs_before=outcome["runs_before"])
                metrics.add_metric(name="RepeatsProcessed", unit=MetricUnit.Count, value=1)
        except ArgyleAuthError as exc:
            logger.error("Argyle rejected the API keys: fix the credentials secret, then redrive the DLQ",
                         status=exc.status, error=type(exc).__name__)
            metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
            raise
        except Exception as exc:
            logger.warning("sync failed, SQS will retry the message", error=type(exc).__name__,
                           reason=str(exc)[:300])
            metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
            raise
        _publish_changes(rt, outcome, parsed, message)
        _record_metrics(outcome, message)
        logger.info("message processed", **_log_fields(outcome))
        return outcome
    finally:
        retries = rt.sync.argyle_retries - retries_before
        if retries:
            metrics.add_metric(name="ArgyleRetries", unit=MetricUnit.Count, value=retries)
        logger.remove_keys(_PER_RECORD_KEYS)


def _publish_changes(rt: SyncRuntime, outcome: dict[str, Any], parsed: ParsedMessage, message: SyncMessage) -> None:
    """After the idempotent step, so a failed PutEvents fails the record and its retry publishes the
    stored outcome's change set again (sync/change_events.py: at least once, stable event ids)."""
    account = getattr(parsed.data, "account", None)
    if rt.change_bus is None or not isinstance(account, str) or not should_publish(outcome, message.message_id):
        return
    events = change_events(outcome, account=account, user=getattr(parsed.data, "user", None),
                           message_id=message.message_id or parsed.run_key)
    if events:
        rt.change_bus.publish(events)
        metrics.add_metric(name="ChangeEventsPublished", unit=MetricUnit.Count, value=len(events))


def _log_argyle_wait(wait: RetryWait) -> None:
    """Argyle's 429s, 5xx and dropped connections are retried inside a call; each wait is one line,
    so that a slow sync says why."""
    logger.info("Argyle asked us to wait (429)" if wait.status == 429 else "retrying an Argyle call",
                argyle_status=wait.status, wait_seconds=round(wait.seconds, 3), retry_after=wait.retry_after,
                argyle_call=f"{wait.method} {wait.path}", argyle_attempt=wait.attempt)


def _delay_failed_records() -> None:
    """Each failed record comes back after its schedule's delay (30 s, 2 min, 8 min, 30 min by
    default) instead of the queue's 90-minute visibility timeout, and after its last attempt at
    once, so that SQS moves it to the DLQ. One line per record: why, attempt n of N, what next."""
    rt = runtime()
    delays: list[tuple[str, int]] = []
    for failed, (_, exc, _) in zip(processor.fail_messages, processor.exceptions, strict=True):
        record = cast(SQSRecord, failed)  # an SQS processor without a model holds SQSRecords
        event = record.message_attributes["event"]  # None when absent
        correlation = record.message_attributes["correlation_id"]
        fields: dict[str, Any] = {
            "message_id": record.message_id, "group_id": record.attributes.message_group_id,
            "event_name": event.string_value if event else None,
            "correlation_id": correlation.string_value if correlation else None}
        if isinstance(exc, _SKIPPED_BEHIND_FAILURE):
            # Not attempted. Visible at once, it still waits: SQS hands out nothing of a FIFO group
            # while the failed record ahead of it is in flight, and then hands out both in order.
            logger.info("record skipped: an earlier record of its group failed, it follows that one", **fields)
            delays.append((record.receipt_handle, 0))
            continue
        redelivery = rt.retry_schedule.after_failure(int(record.attributes.approximate_receive_count or 1))
        fields.update(attempt=redelivery.attempt, max_attempts=redelivery.max_attempts, error=type(exc).__name__,
                      reason=str(exc)[:300])
        if redelivery.last_attempt:
            logger.error("record failed its last attempt: SQS moves it to the DLQ", **fields)
        else:
            logger.warning("record failed: SQS hands it out again after a delay",
                           retry_in_seconds=redelivery.delay_seconds, **fields)
        delays.append((record.receipt_handle, redelivery.delay_seconds))
        _note_failure(rt, fields, redelivery.attempt)
    refused = rt.queue.retry_later(delays)
    if refused:
        # Not lost: these records keep the queue's visibility timeout and come back after it.
        logger.warning("could not set the retry delay; the records come back after the queue's visibility timeout",
                       records=len(refused), errors=sorted(set(refused.values())))


def _note_failure(rt: SyncRuntime, fields: dict[str, Any], attempt: int) -> None:
    """The account's last failure, for its health (`argyle-synced health`); a user's group has none."""
    group = str(fields.get("group_id") or "")
    if rt.state is None or not group.startswith("account:"):
        return
    failed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    reason = f"{fields.get('error')}: {fields.get('reason')}"
    if not rt.state.record_failure(group.removeprefix("account:"), event=str(fields.get("event_name") or ""),
                                   failed_at=failed_at, reason=reason, attempts=attempt):
        # Not fatal: the record is retried all the same; only its health note is missing.
        logger.warning("could not note the failure in the account's health", group_id=group)


def _log_fields(outcome: dict[str, Any]) -> dict[str, Any]:
    names = ("action", "part", "pages", "upserted", "stale", "skipped_removed", "removed", "fetched",
             "continuation_part", "archived", "duplicate", "contradicted", "drift", "listing_pass", "relisted",
             "unstable", "changes_parts", "purged", "purge_queued", "connection_status", "argyle_gave_out")
    return {name: outcome[name] for name in names if outcome.get(name) not in (None, 0)}


def _record_metrics(outcome: dict[str, Any], message: SyncMessage) -> None:
    if outcome.get("duplicate"):
        metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="ActivitiesUpserted", unit=MetricUnit.Count, value=outcome.get("upserted", 0))
    metrics.add_metric(name="ActivitiesRemoved", unit=MetricUnit.Count, value=outcome.get("removed", 0))
    if outcome.get("stale") or outcome.get("skipped_removed"):
        metrics.add_metric(name="StaleWritesSkipped", unit=MetricUnit.Count,
                           value=outcome.get("stale", 0) + outcome.get("skipped_removed", 0))
    if outcome.get("continuation_part"):
        metrics.add_metric(name="ContinuationsQueued", unit=MetricUnit.Count, value=1)
    _record_drift_metrics(outcome)
    if message.received_at_ms:
        lag = max(0, int(time.time() * 1000) - message.received_at_ms)
        metrics.add_metric(name="SyncLagMs", unit=MetricUnit.Milliseconds, value=lag)
        if exact_lag_applies(outcome):
            # Freshness: accepted by the receiver -> the webhook's whole work applied (docs/runbook.md).
            metrics.add_metric(name="ExactLagMs", unit=MetricUnit.Milliseconds, value=lag)
    # One dimension value per event name: its own EMF line, apart from the function-wide metrics.
    with single_metric(name="EventsProcessed", unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE}) as metric:
        metric.add_dimension(name="event", value=str(outcome.get("event", "unknown"))[:200])


def exact_lag_applies(outcome: dict[str, Any]) -> bool:
    """Whether this message finished a webhook's work (its listing's last part and pass, or a part
    of its ids): the sync's own requests (reconciles, purges, re-syncs) are not webhooks' lag."""
    return bool(outcome.get("completed")) and outcome.get("event") not in _NOT_WEBHOOKS


def _record_drift_metrics(outcome: dict[str, Any]) -> None:
    """What Argyle and the stored copy disagreed on: security signals and drift, each its own line."""
    if outcome.get("contradicted"):
        # A signed activities.removed naming activities Argyle still has: a leaked webhook secret or a
        # mistaken event. Nothing was removed; the alarm on this metric asks a human to look.
        logger.warning("activities.removed named activities that Argyle still has: kept, not removed",
                       contradicted=outcome["contradicted"])
        metrics.add_metric(name="RemovalsContradicted", unit=MetricUnit.Count, value=outcome["contradicted"])
    if outcome.get("relisted"):
        metrics.add_metric(name="ListingsRelisted", unit=MetricUnit.Count, value=1)
    if outcome.get("unstable"):
        logger.warning("Argyle kept changing during every pass of this listing: recorded; the reconciler "
                       "checks the account")
        metrics.add_metric(name="ListingsUnstable", unit=MetricUnit.Count, value=1)
    if outcome.get("purged") is not None:
        # Ids and counts only: what left, never what it held.
        logger.info("account purged", deleted=outcome["purged"])
        metrics.add_metric(name="AccountsPurged", unit=MetricUnit.Count, value=1)
    if outcome.get("action") == "skipped_purged":
        metrics.add_metric(name="PurgedAccountEventsSkipped", unit=MetricUnit.Count, value=1)
    drift = outcome.get("drift")
    if drift is None:
        return
    metrics.add_metric(name="Reconciles", unit=MetricUnit.Count, value=1)
    for kind, count in sorted(drift.items()):
        if not count:
            continue
        logger.warning("drift found and repaired", kind=kind, count=count)
        for name in ("DriftDetected", "DriftRepaired"):  # every drift found is repaired in the same pass
            with single_metric(name=name, unit=MetricUnit.Count, value=count, namespace=NAMESPACE,
                               default_dimensions={"service": SERVICE}) as metric:
                metric.add_dimension(name="kind", value=kind)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    # In-progress records expire with this invocation: a crash cannot block the event for longer.
    runtime().idempotency_config.register_lambda_context(context)
    response = process_partial_response(event=event, record_handler=handle_record, processor=processor,
                                        context=context)
    if response.get("batchItemFailures"):
        _delay_failed_records()
    return response
