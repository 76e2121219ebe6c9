"""The sync under injected faults: however DynamoDB and Argyle fail, and wherever the process dies,
once the failed messages are retried the stored activities equal Argyle's truth exactly, with no
message lost (nothing in the DLQ unless a test means it) and every event archived and counted once.

Argyle is the sandbox over HTTP; the queue, tables and secrets are template.yaml's, in moto's
in-process mock; webhooks are the sandbox's own deliveries, enqueued by the receiver's intake code;
the queue is drained through `sync_handler.lambda_handler` as Lambda's SQS poller would. The
Argyle client is configured by the environment the template sets (ARGYLE_PAGE_LIMIT,
ARGYLE_TIMEOUT_SECONDS, ARGYLE_MAX_ATTEMPTS, DYNAMODB_MAX_ROUNDS), small here to get several pages.

How a failure is retried, as AWS does it: a record reported failed, or every record of an
invocation that raised or died, becomes visible again once the queue's VisibilityTimeout (5400 s)
has passed. That is longer than the function's Timeout (900 s), which is when Powertools' in-progress
idempotency records expire, so the retry finds them expired: the emulation expires them too.
A crash is a BaseException (nothing in the handler catches it), after which the next invocation
runs in a new container: new clients, new runtime, new batch processor.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor
from botocore.exceptions import ClientError

import sync_handler
from argyle_ops.redrive import redrive
from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.secret_values import ArgyleCredentials
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.receiving.signature import sign
from argyle_pipeline.receiving.webhook_intake import WebhookRequest, handle_webhook
from argyle_pipeline.sync.settings import sync_settings
from argyle_sandbox.server import SandboxServer
from local_stack.lambda_runtime import function_environment
from local_stack.template_resources import StackResources, create_stack_resources, load_template
from tests.support.lambda_events import FakeLambdaContext, record_from_sqs_message, sqs_event
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import RecordingServer

KEY_ID, KEY_SECRET = "faults-key-id", "faults-key-secret"
WEBHOOK_SECRET = "faults-webhook-secret"
WRITES = frozenset({"put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"})
_stacks = iter(range(1_000_000))


@functools.cache
def _template() -> dict[str, Any]:
    return load_template()


@functools.cache
def _client(service: str) -> Any:
    """One client per service for the whole module (moto's mock intercepts every client, whenever
    it was made): making clients and parsing template.yaml would otherwise cost more than the sync."""
    return boto3.Session(region_name="us-east-1").client(service)


class _Clients:
    def client(self, service: str, **kwargs: Any) -> Any:
        assert not kwargs
        return _client(service)


# --- DynamoDB that fails ---------------------------------------------------------------------------

class ProcessDied(BaseException):
    """The Lambda process dies (out of memory, timeout, host failure): nothing catches it."""


def dynamodb_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)


@dataclass
class FaultyDynamoDB:
    """A real (moto) DynamoDB client, with faults:
    - `crash_before`: the write call with this number (1-based, over every table) kills the process
      before it reaches DynamoDB; `crash_after`: after DynamoDB applied it;
    - `errors`: operation -> error codes, raised (in order) by that operation's next calls, as
      botocore raises them once its own retries are spent;
    - `unprocessed`: the next N BatchWriteItem/BatchGetItem calls process only half of their items.
    """

    client: Any
    crash_before: int | None = None
    crash_after: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    unprocessed: int = 0
    writes: int = 0
    raised: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if not callable(target) or name in ("get_paginator", "get_waiter", "can_paginate"):
            return target

        def call(**kwargs: Any) -> Any:
            pending = self.errors.get(name)
            if pending:
                code = pending.pop(0)
                self.raised.append(f"{name}:{code}")
                raise dynamodb_error(code, name)
            if name in WRITES:
                self.writes += 1
                if self.writes == self.crash_before:
                    raise ProcessDied(f"died before write {self.writes} ({name})")
            if name in ("batch_write_item", "batch_get_item") and self.unprocessed > 0:
                self.unprocessed -= 1
                response = self._half(name, kwargs)
            else:
                response = target(**kwargs)
            if name in WRITES and self.writes == self.crash_after:
                raise ProcessDied(f"died after write {self.writes} ({name})")
            return response

        return call

    def _half(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        ((table, request),) = kwargs["RequestItems"].items()
        if name == "batch_write_item":
            cut = len(request) // 2
            if cut:
                self.client.batch_write_item(RequestItems={table: request[:cut]})
            return {"UnprocessedItems": {table: request[cut:]}}
        keys = request["Keys"]
        cut = len(keys) // 2
        found = self.client.batch_get_item(RequestItems={table: {**request, "Keys": keys[:cut]}})["Responses"] \
            if cut else {table: []}
        return {"Responses": found, "UnprocessedKeys": {table: {**request, "Keys": keys[cut:]}}}


# --- the sync, as Lambda runs it -------------------------------------------------------------------

class RecordedSleeps(list[float]):
    """A `sleep` that records instead of waiting. Always truthy: build_runtime takes `sleep or
    time.sleep`, and an empty list would otherwise mean real sleeps."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    def __bool__(self) -> bool:
        return True


@dataclass
class Drained:
    invocations: int = 0
    failed_records: int = 0
    crashes: int = 0


class SyncLambda:
    """SyncFunction on template.yaml's resources (a fresh set per instance) against the sandbox."""

    def __init__(self, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, *, page_limit: int = 7,
                 max_attempts: int = 3, timeout_seconds: float = 5.0) -> None:
        self.stack: StackResources = create_stack_resources(_Clients(), prefix=f"faults{next(_stacks)}",
                                                            template=_template())
        self.monkeypatch = monkeypatch
        environment = {**function_environment("SyncFunction", self.stack, template=_template()),
                       **self.stack.environment(),
                       "ARGYLE_API_URL": sandbox.base_url, "ARGYLE_PAGE_LIMIT": str(page_limit),
                       "ARGYLE_MAX_ATTEMPTS": str(max_attempts), "ARGYLE_TIMEOUT_SECONDS": str(timeout_seconds),
                       "ARGYLE_FETCH_CONCURRENCY": "2", "DYNAMODB_MAX_ROUNDS": "3",
                       "POWERTOOLS_SERVICE_NAME": "argyle-sync", "AWS_LAMBDA_FUNCTION_NAME": "SyncFunction"}
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        _client("secretsmanager").put_secret_value(
            SecretId=self.stack.secrets["ArgyleCredentialsSecret"],
            SecretString=json.dumps({"api_key_id": KEY_ID, "api_key_secret": KEY_SECRET}))
        self.sqs = _client("sqs")
        self.plain = _client("dynamodb")
        self.queue_url = self.stack.queue_urls["EventsQueue"]
        self.dlq_url = self.stack.queue_urls["EventsDLQ"]
        self.queue = EventQueue(self.queue_url, self.sqs)
        self.sleeps = RecordedSleeps()
        self.dynamodb: FaultyDynamoDB = FaultyDynamoDB(self.plain)
        self.new_container()

    def new_container(self, dynamodb: FaultyDynamoDB | None = None, *, argyle_from_settings: bool = False) -> None:
        """What a new Lambda container makes: settings from the environment, clients, the runtime
        (the idempotency layer on the same DynamoDB client as the stores), a fresh batch processor.
        `argyle_from_settings`: the Argyle clients exactly as the handler makes them (real backoff
        sleeps, credentials from Secrets Manager); otherwise the same settings, sleeps recorded."""
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        sync_handler.set_runtime(None)
        settings = sync_settings()
        self.dynamodb = dynamodb or FaultyDynamoDB(self.plain)
        argyle: dict[str, Any] = {}
        if not argyle_from_settings:
            clients = [ArgyleClient(settings.argyle_api_url, ArgyleCredentials(KEY_ID, KEY_SECRET),
                                    timeout=settings.argyle_timeout_seconds, max_attempts=settings.argyle_max_attempts,
                                    page_limit=settings.argyle_page_limit, sleep=self.sleeps)
                       for _ in range(settings.fetch_concurrency + 1)]
            argyle = {"argyle": clients[0], "fetchers": clients[1:]}
        runtime = sync_handler.build_runtime(settings, dynamodb=self.dynamodb, idempotency_dynamodb=self.dynamodb,
                                             sqs=self.sqs, sleep=self.sleeps, **argyle)
        sync_handler.set_runtime(runtime)
        self.monkeypatch.setattr(sync_handler, "processor", SqsFifoPartialProcessor(skip_group_on_error=True))

    # --- in ------------------------------------------------------------------------------------

    def deliver(self, body: bytes) -> None:
        """The receiver's intake, on a signed delivery."""
        request = WebhookRequest(body=body, headers={"x-argyle-signature": sign(body, WEBHOOK_SECRET)},
                                 source_ip="127.0.0.1", request_id="faults")
        assert handle_webhook(request, secrets=lambda: [WEBHOOK_SECRET], queue=self.queue).status == 202

    # --- out -----------------------------------------------------------------------------------

    def invoke(self, report: Drained, context: Callable[[], FakeLambdaContext] = FakeLambdaContext) -> bool:
        """One invocation on what the queue hands out now; False when it handed out nothing."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                            MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            return False
        report.invocations += 1
        event = sqs_event([record_from_sqs_message(m, self.stack.queue_arns["EventsQueue"]) for m in messages])
        try:
            response = sync_handler.lambda_handler(event, context())
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except ProcessDied:
            report.crashes += 1
            failed = {m["MessageId"] for m in messages}
            self.new_container(FaultyDynamoDB(self.plain))
        except Exception:  # the whole batch failed: Lambda retries every record
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                report.failed_records += 1
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                   VisibilityTimeout=0)
            else:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if failed:
            self.visibility_timeout_passes()
        return True

    def drain(self, max_invocations: int = 200,
              context: Callable[[], FakeLambdaContext] = FakeLambdaContext) -> Drained:
        report = Drained()
        while self.invoke(report, context):
            assert report.invocations < max_invocations, "the queue does not drain"
        return report

    def visibility_timeout_passes(self) -> None:
        """The failed messages come back after VisibilityTimeout, past any in-progress expiry."""
        table = self.stack.tables["IdempotencyTable"]
        expired = str(int(time.time() * 1000) - 1)
        for item in self.plain.scan(TableName=table).get("Items", []):
            if item.get("status", {}).get("S") == "INPROGRESS":
                self.plain.update_item(TableName=table, Key={"id": item["id"]},
                                       UpdateExpression="SET in_progress_expiration = :t",
                                       ExpressionAttributeValues={":t": {"N": expired}})

    # --- checks --------------------------------------------------------------------------------

    def assert_converged(self, sandbox: SandboxServer, account: str, events: list[str]) -> None:
        assert live_activities(self.stack.tables["ActivitiesTable"], account) == {
            doc["id"]: doc for doc in sandbox.truth(account)}
        assert self.sqs.receive_message(QueueUrl=self.dlq_url, VisibilityTimeout=0).get("Messages") is None
        state = SyncStateStore(self.stack.tables["SyncStateTable"], self.plain)
        assert state.event_counts() == {event: events.count(event) for event in events}
        account_state = state.account_state(account)
        assert account_state is not None and account_state["status"] == "fully_synced"
        assert account_state["available_count"] == len(sandbox.truth(account))


# --- a small account's life ------------------------------------------------------------------------

@dataclass
class Scenario:
    """An account connected at Argyle (30 activities and an undated one by default), then a
    periodic scan that adds, updates and removes some. Each sandbox with this seed is identical."""

    sandbox: SandboxServer
    inbox: RecordingServer
    activities: int = 30
    changes: tuple[int, int, int] = (3, 2, 2)  # added, updated, removed
    account: str = ""
    events: list[str] = field(default_factory=list)  # one per distinct body: the sync's dedupe key
    seen: set[bytes] = field(default_factory=set)

    def webhooks(self) -> list[bytes]:
        self.sandbox.wait_for_deliveries(20)
        bodies = [r.body for r in self.inbox.requests]
        self.inbox.requests.clear()
        # A scan's accounts.updated ({account, user}) is byte-identical to the connect's: one event.
        for body in bodies:
            if body not in self.seen:
                self.seen.add(body)
                self.events.append(json.loads(body)["event"])
        return bodies

    def connect(self) -> list[bytes]:
        _, self.account = self.sandbox.connect_account(n_activities=self.activities, years=1, undated=1)
        return self.webhooks()

    def scan(self) -> list[bytes]:
        added, updated, removed = self.changes
        self.sandbox.periodic_scan(self.account, add=added, update=updated, remove=removed)
        return self.webhooks()


@pytest.fixture
def scenario(moto_in_process: None) -> Iterator[Scenario]:
    with SandboxServer(seed=5, api_key_id=KEY_ID, api_key_secret=KEY_SECRET, delivery_backoff=0.01,
                       delivery_timeout=2.0) as sandbox:
        inbox = RecordingServer().start()
        sandbox.subscribe(f"{inbox.url}/webhooks/argyle", events=["*"], secret=WEBHOOK_SECRET,
                          config={"days_synced": 60})
        try:
            yield Scenario(sandbox, inbox)
        finally:
            inbox.stop()
            sync_handler.set_runtime(None)


def run_scenario(scenario: Scenario, sync: SyncLambda, between: Callable[[], None] = lambda: None) -> Drained:
    """Connect and sync, scan and sync; `between` runs after the first drain."""
    total = Drained()
    for stage in (scenario.connect, scenario.scan):
        for body in stage():
            sync.deliver(body)
        report = sync.drain()
        total.invocations += report.invocations
        total.failed_records += report.failed_records
        total.crashes += report.crashes
        if stage == scenario.connect:
            between()
    return total


# --- the process dies between any two writes ----------------------------------------------------

def test_the_premise_retries_come_after_the_in_progress_records_expire() -> None:
    # Given template.yaml: a failed message reappears after VisibilityTimeout, and an in-progress
    # idempotency record expires with the invocation, at the latest after the function's Timeout
    resources = _template()["Resources"]
    visibility = resources["EventsQueue"]["Properties"]["VisibilityTimeout"]
    timeout = resources["SyncFunction"]["Properties"]["Timeout"]
    # Then a retried message always finds a crashed run's record expired (what the emulation does)
    assert visibility > timeout


@dataclass
class ArgyleTwice:
    """Argyle before and after the periodic scan: two sandboxes with the same seed and the same
    operations (hence the same ids), one stopped after the connection, one after the scan, with the
    webhooks each stage sent. Kept for every run, so a run is only the sync's work."""

    connected: SandboxServer
    scanned: SandboxServer
    account: str
    connect_webhooks: list[bytes]
    scan_webhooks: list[bytes]

    @property
    def events(self) -> list[str]:
        return [json.loads(body)["event"] for body in self.connect_webhooks + self.scan_webhooks]


@pytest.fixture
def argyle_twice() -> Iterator[ArgyleTwice]:
    with contextlib.ExitStack() as stack:
        stages = []
        for scan in (False, True):
            sandbox = stack.enter_context(SandboxServer(seed=5, api_key_id=KEY_ID, api_key_secret=KEY_SECRET,
                                                        delivery_backoff=0.01, delivery_timeout=2.0))
            inbox = RecordingServer().start()
            stack.callback(inbox.stop)
            sandbox.subscribe(f"{inbox.url}/webhooks/argyle", events=["*"], secret=WEBHOOK_SECRET,
                              config={"days_synced": 60})
            # Small, so that every write position can be tried: 12 activities and an undated one.
            scenario = Scenario(sandbox, inbox, activities=12, changes=(2, 2, 1))
            connect = scenario.connect()
            stages.append((sandbox, scenario.account, connect, scenario.scan() if scan else []))
        (connected, account, connect_webhooks, _), (scanned, same_account, same_webhooks, scan_webhooks) = stages
        assert (same_account, same_webhooks) == (account, connect_webhooks)
        # The scan's accounts.updated repeats the connect's byte for byte: the idempotency layer's
        # case (tested elsewhere). Left out, so that every write counted is one that can be crashed after.
        scan_webhooks = [body for body in scan_webhooks if body not in connect_webhooks]
        yield ArgyleTwice(connected, scanned, account, connect_webhooks, scan_webhooks)
    sync_handler.set_runtime(None)


def live_through(argyle: ArgyleTwice, sync: SyncLambda) -> Drained:
    """The connection's webhooks synced against Argyle as it was then, the scan's against Argyle
    after the scan (a new container in between); the copy is checked against the latter."""
    total = Drained()
    for sandbox, webhooks in ((argyle.connected, argyle.connect_webhooks), (argyle.scanned, argyle.scan_webhooks)):
        sync.monkeypatch.setenv("ARGYLE_API_URL", sandbox.base_url)
        sync.new_container(sync.dynamodb)
        for body in webhooks:
            sync.deliver(body)
        report = sync.drain()
        total.crashes += report.crashes
        total.failed_records += report.failed_records
    sync.assert_converged(argyle.scanned, argyle.account, argyle.events)
    return total


# A run that dies before any metric was added flushes none, and Powertools warns about it.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_crash_between_any_two_writes_recovers_to_argyles_exact_copy(
        moto_in_process: None, argyle_twice: ArgyleTwice, monkeypatch: pytest.MonkeyPatch) -> None:
    def life(crash_before: int | None = None, crash_after: int | None = None) -> tuple[FaultyDynamoDB, Drained]:
        sync = SyncLambda(argyle_twice.connected, monkeypatch, page_limit=5)
        planned = FaultyDynamoDB(sync.plain, crash_before=crash_before, crash_after=crash_after)
        sync.dynamodb = planned
        return planned, live_through(argyle_twice, sync)

    # Given the account's life synced once without faults, to count its DynamoDB writes (every
    # table, idempotency records included)
    baseline, report = life()
    writes = baseline.writes
    assert report.crashes == 0 and writes >= 25
    assert set(argyle_twice.events) >= {"activities.partially_synced", "activities.fully_synced",
                                        "users.fully_synced", "activities.added", "activities.updated",
                                        "activities.removed"}

    # When the process dies just before each write in turn (and once just after the last one), and
    # its messages are retried until they succeed
    crashes = {}
    for k in [*range(1, writes + 1), None]:
        _, report = life(crash_before=k, crash_after=None if k else writes)
        crashes[k] = report.crashes
    # Then each run died exactly once where planned, and ended with Argyle's exact copy (checked
    # in live_through)
    assert crashes == {k: 1 for k in crashes}


# --- DynamoDB throttled and failing ---------------------------------------------------------------

@pytest.mark.parametrize("operation, codes", [
    ("batch_write_item", ["ProvisionedThroughputExceededException"] * 2),
    ("batch_get_item", ["ThrottlingException"]),
    ("put_item", ["InternalServerError", "ProvisionedThroughputExceededException"]),  # idempotency, user, updated
    ("update_item", ["ThrottlingException", "InternalServerError", "RequestLimitExceeded"]),
    # the purge gate, Powertools' idempotency record, the archive's "counted before?" read
    ("get_item", ["InternalServerError", "TransactionConflictException"]),
    ("delete_item", ["InternalServerError"] * 3),  # Powertools deleting a failed run's in-progress record
])
def test_throttled_and_failing_dynamodb_calls_are_retried_to_the_exact_copy(
        scenario: Scenario, monkeypatch: pytest.MonkeyPatch, operation: str, codes: list[str]) -> None:
    # Given a sync whose DynamoDB client raises these errors on its next calls of the operation
    # (and, for delete_item, an Argyle failure first, so that Powertools has a record to delete)
    sync = SyncLambda(scenario.sandbox, monkeypatch)
    faulty = FaultyDynamoDB(sync.plain, errors={operation: list(codes)})
    sync.new_container(faulty)
    if operation == "delete_item":
        scenario.sandbox.faults.update({"fail_next": 9})  # three runs of three attempts
    # When the account's life is synced
    report = run_scenario(scenario, sync)
    # Then every error was hit and failed its message, which was retried, and the copy is exact
    assert faulty.raised == [f"{operation}:{code}" for code in codes]
    assert report.failed_records >= 1
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)


def test_unprocessed_items_are_retried_and_past_the_rounds_fail_the_message(
        scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given DynamoDB leaving half of a batch unprocessed, for more rounds than DYNAMODB_MAX_ROUNDS (3)
    sync = SyncLambda(scenario.sandbox, monkeypatch)
    faulty = FaultyDynamoDB(sync.plain, unprocessed=7)
    sync.new_container(faulty)
    # When the account's life is synced
    report = run_scenario(scenario, sync)
    # Then the store retried with backoff, gave the message up once its rounds were spent, and the
    # retried message completed the exact copy
    assert faulty.unprocessed == 0
    assert report.failed_records >= 1
    assert any(0 < s <= 2.0 for s in sync.sleeps)
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)


def test_a_random_storm_of_dynamodb_faults_converges(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given every kind of DynamoDB fault, spread over the first calls of each operation (seeded)
    import random

    rng = random.Random(20240601)
    codes = ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
    errors = {op: [rng.choice(codes) for _ in range(rng.randint(0, 2))]
              for op in ("batch_write_item", "batch_get_item", "put_item", "update_item", "get_item")}
    sync = SyncLambda(scenario.sandbox, monkeypatch)
    faulty = FaultyDynamoDB(sync.plain, errors=errors, unprocessed=2)
    sync.new_container(faulty)
    # When the account's life is synced, Argyle failing now and then too
    scenario.sandbox.faults.update({"fail_every": 9})
    run_scenario(scenario, sync, between=lambda: scenario.sandbox.faults.update({"fail_every": 0}))
    # Then the copy is exact
    assert all(not pending for pending in faulty.errors.values())
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)


# --- Argyle slow, rate limiting, failing ----------------------------------------------------------

def test_argyle_timeouts_fail_the_message_fast_and_the_retry_syncs(scenario: Scenario,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the sync made exactly as the handler makes it, with ARGYLE_TIMEOUT_SECONDS=0.2 and two
    # attempts, and Argyle answering only after 1.5 s
    sync = SyncLambda(scenario.sandbox, monkeypatch, timeout_seconds=0.2, max_attempts=2)
    sync.new_container(argyle_from_settings=True)
    for body in scenario.connect():
        sync.deliver(body)
    scenario.sandbox.faults.update({"delay_seconds": 1.5})
    # When one invocation runs
    started = time.monotonic()
    report = Drained()
    sync.invoke(report)
    elapsed = time.monotonic() - started
    # Then its records failed on the client's timeout, well before Argyle would have answered twice
    assert report.failed_records >= 1
    assert elapsed < 2.5
    # When Argyle is fast again and the failed messages are retried
    scenario.sandbox.faults.update({"delay_seconds": 0.0})
    sync.drain()
    for body in scenario.scan():
        sync.deliver(body)
    sync.drain()
    # Then the copy is exact
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)


def test_a_429_storm_is_waited_out_as_argyle_asks_and_nothing_is_lost(scenario: Scenario,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Argyle rate limiting the next 7 requests with Retry-After: 2 (3 attempts per call)
    sync = SyncLambda(scenario.sandbox, monkeypatch)
    scenario.sandbox.faults.update({"rate_limit_next": 7, "retry_after": "2"})
    # When the account's life is synced
    report = run_scenario(scenario, sync)
    # Then each 429 was followed by the wait Argyle asked for, two invocations failed, none was lost
    assert sync.sleeps.count(2.0) >= 4
    assert report.failed_records >= 2
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)


def test_a_500_storm_longer_than_the_queue_retries_ends_in_the_dlq_and_a_redrive_recovers(
        scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Argyle failing every request for a while (longer than five receives of 3 attempts)
    sync = SyncLambda(scenario.sandbox, monkeypatch)
    for body in scenario.connect():
        sync.deliver(body)
    scenario.sandbox.faults.update({"fail_next": 1_000})
    # When the queue drains
    sync.drain()
    # Then the messages that need Argyle wait in the DLQ (maxReceiveCount 5), with the
    # accounts.updated queued behind them in the account's group, and the rest synced
    waiting = sync.sqs.receive_message(QueueUrl=sync.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert {json.loads(m["Body"])["event"] for m in waiting["Messages"]} == {
        "activities.partially_synced", "activities.fully_synced", "accounts.updated"}
    # When Argyle recovers, the DLQ is redriven and the scan's webhooks arrive
    scenario.sandbox.faults.reset()
    assert redrive(sync.sqs, sync.dlq_url, sync.queue_url).moved == 3
    sync.drain()
    for body in scenario.scan():
        sync.deliver(body)
    sync.drain()
    # Then the copy is exact
    sync.assert_converged(scenario.sandbox, scenario.account, scenario.events)
