"""The sync function as Lambda runs it, for integration tests: template.yaml's queue and tables in
moto, webhooks enqueued by the receiver's own intake code, and the queue drained into
`sync_handler.lambda_handler` as Lambda-shaped SQS events (failed records become visible again
at once, as after their visibility timeout; moto moves them to the DLQ after maxReceiveCount).
Every send (the receiver's and the sync's continuations) meets SQS FIFO's 5-minute deduplication
window (`local_stack.fifo_dedupe_window`), which moto alone does not have.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

import sync_handler
from argyle_pipeline.argyle.api_versions import V1, api_version_of_url
from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.receiving.signature import sign
from argyle_pipeline.receiving.webhook_intake import WebhookRequest, handle_webhook
from argyle_pipeline.sync.settings import sync_settings
from local_stack.fifo_dedupe_window import SQS_WINDOW_SECONDS, FifoDedupeWindow
from local_stack.template_resources import StackResources
from tests.support.lambda_events import FakeLambdaContext, record_from_sqs_message, sqs_event

WEBHOOK_SECRET = "harness-webhook-secret"


class RecordedSleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class DrainReport:
    invocations: int = 0
    processed: int = 0
    failed: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class SyncHarness:
    def __init__(self, stack: StackResources, monkeypatch: pytest.MonkeyPatch, *, base_url: str,
                 api_key_id: str, api_key_secret: str, margin_seconds: float = 120,
                 dynamodb: Any = None, fetch_concurrency: int = 3, max_attempts: int = 4,
                 page_limit: int = 200, dedupe_window: FifoDedupeWindow | None = None) -> None:
        self.stack = stack
        self.dedupe_window = dedupe_window or FifoDedupeWindow(SQS_WINDOW_SECONDS)
        self.sqs = self.dedupe_window.attach(boto3.client("sqs"))
        self.queue_url = stack.queue_urls["EventsQueue"]
        self.queue_arn = stack.queue_arns["EventsQueue"]
        self.dlq_url = stack.queue_urls["EventsDLQ"]
        self.base_url = base_url
        self.api_key = (api_key_id, api_key_secret)
        for name, value in stack.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("ARGYLE_API_URL", base_url)
        # The version the sandbox's URL names (/v1 or /v2), as the template's ArgyleApiVersion would.
        monkeypatch.setenv("ARGYLE_API_VERSION", (api_version_of_url(base_url) or V1).name)
        monkeypatch.setenv("CONTINUATION_MARGIN_SECONDS", str(margin_seconds))
        monkeypatch.setenv("ARGYLE_FETCH_CONCURRENCY", str(fetch_concurrency))
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "argyle-sync")
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "SyncFunction")
        boto3.client("secretsmanager").put_secret_value(
            SecretId=stack.secrets["ArgyleCredentialsSecret"],
            SecretString=json.dumps({"api_key_id": api_key_id, "api_key_secret": api_key_secret}))
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        self.queue = EventQueue(self.queue_url, self.sqs)
        self.sleeps = RecordedSleeps()
        self.rebuild(dynamodb=dynamodb, fetch_concurrency=fetch_concurrency, max_attempts=max_attempts,
                     page_limit=page_limit)

    def rebuild(self, *, dynamodb: Any = None, fetch_concurrency: int = 3, max_attempts: int = 4,
                page_limit: int = 200, margin_ms: int | None = None,
                window_threshold: int | None = None) -> None:
        """A new container: settings from the environment, Argyle clients whose retry waits are
        recorded rather than slept, DynamoDB through `dynamodb` (the idempotency table always
        through the plain client: a test's injected throttling would otherwise leave in-progress
        records that only expire with the function's timeout)."""
        sync_handler.set_runtime(None)
        settings = sync_settings()
        if margin_ms is not None:
            settings = dataclasses.replace(settings, continuation_margin_ms=margin_ms)
        if window_threshold is not None:  # listings above it are split into start-date windows
            settings = dataclasses.replace(settings, listing_window_threshold=window_threshold)
        self.dynamodb = dynamodb or boto3.client("dynamodb")
        self.clients = [ArgyleClient(self.base_url, _credentials(*self.api_key), sleep=self.sleeps,
                                     max_attempts=max_attempts, timeout=5.0, page_limit=page_limit,
                                     api=settings.argyle_api)
                        for _ in range(fetch_concurrency + 1)]
        self.runtime = sync_handler.build_runtime(
            settings, argyle=self.clients[0], fetchers=self.clients[1:], dynamodb=self.dynamodb,
            sqs=self.sqs, idempotency_dynamodb=boto3.client("dynamodb"), sleep=self.sleeps)
        sync_handler.set_runtime(self.runtime)

    @property
    def argyle_calls(self) -> int:
        return sum(c.calls for c in self.clients)

    # --- in ------------------------------------------------------------------------------------

    def receive_webhook(self, body: bytes, *, request_id: str | None = None) -> int:
        """What the receiver does with a signed delivery; returns its HTTP status. Each call is a
        new HTTP delivery with its own request id, as API Gateway gives it; passing an earlier
        `request_id` is the receiver sending that same delivery again (SQS's window drops it)."""
        request = WebhookRequest(body=body, headers={"x-argyle-signature": sign(body, WEBHOOK_SECRET)},
                                 source_ip="127.0.0.1", request_id=request_id or f"req-{uuid.uuid4().hex}")
        return handle_webhook(request, secrets=lambda: [WEBHOOK_SECRET], queue=self.queue).status

    # --- out -----------------------------------------------------------------------------------

    def drain(self, *, context: Callable[[], FakeLambdaContext] = FakeLambdaContext, max_invocations: int = 500,
              batch_size: int = 10) -> DrainReport:
        report = DrainReport()
        while report.invocations < max_invocations:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["All"],
                MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                return report
            self.invoke(messages, context(), report)
        raise AssertionError(f"the queue did not drain in {max_invocations} invocations")

    def invoke(self, messages: list[dict[str, Any]], context: FakeLambdaContext,
               report: DrainReport | None = None) -> set[str]:
        """One Lambda invocation on these SQS messages; returns the ids reported failed."""
        report = report if report is not None else DrainReport()
        event = sqs_event([record_from_sqs_message(m, self.queue_arn) for m in messages])
        report.invocations += 1
        try:
            response = sync_handler.lambda_handler(event, context)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:  # every record failed: Lambda retries the whole batch
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                report.failed += 1
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                   VisibilityTimeout=0)
            else:
                report.processed += 1
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def dlq_bodies(self) -> list[str]:
        found = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m["Body"] for m in found.get("Messages", [])]


def _credentials(key_id: str, secret: str) -> Any:
    from argyle_pipeline.aws.secret_values import ArgyleCredentials

    return ArgyleCredentials(key_id, secret)


def fully_synced_body(sandbox: Any, account: str) -> bytes:
    """The activities.fully_synced body the sandbox would send for the account as it is now."""
    start, end = sandbox.available_range(account)
    data = {"account": account, "user": sandbox.state.account(account).user, "available_from": start,
            "available_to": end, "available_count": len(sandbox.truth(account))}
    return json.dumps({"event": "activities.fully_synced", "name": "t", "data": data}).encode()
