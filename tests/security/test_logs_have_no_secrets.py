"""No secret and no personal data reaches a log, on any path.

Marked values go through the receiver (accepted, 401, 400, 413, 503) and the sync (every event
type, continuations, Argyle 401 and 429/500 storms, a malformed webhook, a malformed activity, the
DLQ and its redrive): a marker in the webhook bodies, the webhook secret and every signature, an
address and an amount inside Argyle's activities, and the Argyle API key secret (also as the Basic
auth header it becomes). Everything that could be logged is captured and searched:

- file descriptors 1 and 2 (print, the receiver's telemetry line, Powertools Metrics' EMF lines);
- the Powertools Logger stream of the sync (JSON lines, appended keys included);
- every Python logging record at INFO and above from any library, DEBUG from the project's own
  loggers, with its arguments and extra fields;
- what Lambda itself would log for an invocation that raises (the exception and its traceback,
  chained causes included).

Each test also checks that the marked values really went through (stored, archived or rejected as
expected), and a canary proves the capture sees a marker on each channel.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

import argyle_sandbox.http_api
import argyle_sandbox.state
import sync_handler
import tests.support.sync_harness as sync_harness_module
from argyle_ops import redrive
from argyle_pipeline.argyle.api_versions import V1
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.receiving.signature import sign
from argyle_sandbox.server import SandboxServer
from local_stack.lambda_runtime import environment, function_environment
from local_stack.template_resources import StackResources
from tests.support.lambda_events import FakeLambdaContext
from tests.support.receiver_harness import apigw_event, invoke_receiver, reset_receiver_state
from tests.support.sandbox_fixtures import RecordingServer
from tests.support.sync_harness import SyncHarness

BODY_MARK = "MARK-BODY-7f3a9c51"
WEBHOOK_SECRET = "MARK-WHSECRET-2b8e4d0f"
FORGED_SIGNATURE = "deadbeef" * 8 + "MARK-FORGED-SIG-91c2"
ADDRESS = "MARK-ADDR 1 Secret Street"
AMOUNT = "987654.32"
API_KEY_ID = "log-test-key-id"
API_KEY_SECRET = "MARK-APIKEY-5d1e0a77"
WRONG_KEY_SECRET = "MARK-WRONGKEY-c0ffee11"
SYNC_LOGGER = "argyle-sync"
PROJECT_LOGGERS = ("argyle-sync", "argyle-receiver", "argyle_pipeline", "argyle_ops")


# --- capturing everything ------------------------------------------------------------------------

class _Records(logging.Handler):
    """Every record as text: message, arguments, extra fields and exception, however it is formatted."""

    def __init__(self, out: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.out = out

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or record.name.startswith(PROJECT_LOGGERS)

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage(), json.dumps({k: v for k, v in vars(record).items() if k != "exc_info"},
                                                 default=repr)]
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        self.out.append("\n".join(parts))


class LogCapture:
    """Collects every channel a Lambda's log is made of (see the module docstring)."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.chunks: list[str] = []
        self.powertools = io.StringIO()

    def text(self) -> str:
        out, err = self.capfd.readouterr()
        self.chunks += [out, err]
        return "\n".join([*self.chunks, self.powertools.getvalue()])

    def lambda_error(self, exc: BaseException) -> None:
        """What Lambda logs for an invocation that raised."""
        self.chunks.append(json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__,
                                       "stackTrace": traceback.format_exception(exc)}))


@pytest.fixture
def capture(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    captured = LogCapture(capfd)
    records: list[str] = []
    handler = _Records(records)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # The sync's Powertools Logger writes to the stream it was given at import: send it here, at DEBUG
    # (template.yaml's dev stage level).
    sync_logger = logging.getLogger(SYNC_LOGGER)
    streams = [(h, h.setStream(captured.powertools)) for h in sync_logger.handlers
               if isinstance(h, logging.StreamHandler)]
    previous_sync_level = sync_logger.level
    sync_logger.setLevel(logging.DEBUG)

    # An invocation that raises is logged by Lambda: record it, then let it go on as before. (The
    # handler module the harness calls: the local stack may have imported a newer one since.)
    handler_module = sync_harness_module.sync_handler
    original = handler_module.lambda_handler

    def lambda_handler(event: dict[str, Any], context: Any) -> Any:
        try:
            return original(event, context)
        except Exception as exc:
            captured.lambda_error(exc)
            raise

    monkeypatch.setattr(handler_module, "lambda_handler", lambda_handler)
    captured.chunks = records  # records arrive as they are logged; readouterr output is appended
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        sync_logger.setLevel(previous_sync_level)
        for h, stream in streams:
            h.setStream(stream)


def marks(signatures: list[str]) -> dict[str, str]:
    found = {"body marker": BODY_MARK, "webhook secret": WEBHOOK_SECRET, "forged signature": FORGED_SIGNATURE,
             "address": ADDRESS, "amount": AMOUNT, "API key secret": API_KEY_SECRET,
             "wrong API key secret": WRONG_KEY_SECRET}
    for secret in (API_KEY_SECRET, WRONG_KEY_SECRET):
        found[f"Basic auth of {secret}"] = base64.b64encode(f"{API_KEY_ID}:{secret}".encode()).decode()
    for n, signature in enumerate(signatures):
        found[f"signature {n}"] = signature
    return found


def assert_no_marker(text: str, signatures: list[str]) -> None:
    leaks = {name: text[max(0, text.find(value) - 200):text.find(value) + 200]
             for name, value in marks(signatures).items() if value in text}
    assert not leaks, f"found in the logs: {json.dumps(leaks, indent=1)}"


# --- the receiver --------------------------------------------------------------------------------

class RefusingSqs:
    """SQS failing with an error whose message echoes the request (as a careless service might)."""

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "InternalError", "Message": f"could not store {kwargs['MessageBody']}"}},
                          "SendMessage")


def test_receiver_logs_no_body_secret_or_signature(stack_in_process: StackResources, capture: LogCapture) -> None:
    # Given the receiver as template.yaml wires it, with a marked secret (current and previous)
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack_in_process.secrets["WebhookSecret"],
        SecretString=json.dumps({"current": WEBHOOK_SECRET, "previous": WEBHOOK_SECRET + "-previous",
                                 "previous_expires_at": "2099-01-01T00:00:00Z"}))
    reset_receiver_state()
    signatures: list[str] = []

    def signed(body: bytes, **kwargs: Any) -> dict[str, Any]:
        signatures.append(sign(body, WEBHOOK_SECRET))
        return apigw_event(body, {"X-Argyle-Signature": signatures[-1]}, **kwargs)

    genuine = json.dumps({"event": "activities.added", "name": BODY_MARK,
                          "data": {"account": "acc-1", "note": BODY_MARK}}).encode()
    not_json = f'{{"event": "activities.added", "note": "{BODY_MARK}"'.encode()
    no_event = json.dumps({"name": BODY_MARK}).encode()
    not_utf8 = BODY_MARK.encode() + b"\xff\xfe"
    too_large = json.dumps({"event": "activities.added", "data": {"pad": BODY_MARK * 30_000}}).encode()
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("accepted", signed(genuine), 202),
        ("accepted, base64", signed(genuine.replace(b"acc-1", b"acc-2"), as_base64=True), 202),
        ("forged", apigw_event(genuine, {"X-Argyle-Signature": FORGED_SIGNATURE}), 401),
        ("other secret", apigw_event(genuine, {"X-Argyle-Signature": sign(genuine, "someone-else")}), 401),
        ("unsigned", apigw_event(genuine, {}), 401),
        ("not JSON", signed(not_json), 400),
        ("no event", signed(no_event), 400),
        ("not UTF-8", signed(not_utf8, as_base64=True), 400),
        ("bad base64", {**apigw_event(genuine, {}), "body": BODY_MARK + "!", "isBase64Encoded": True}, 400),
        ("too large", signed(too_large), 413),
    ]

    # When each request is handled
    with environment(function_environment("ReceiverFunction", stack_in_process)):
        answers = {name: invoke_receiver(event)[0] for name, event, _ in cases}
        # The module invoke_receiver imports (the local stack may have re-imported it).
        refusing = EventQueue(stack_in_process.queue_urls["EventsQueue"], RefusingSqs())
        importlib.import_module("receiver_handler").set_queue(refusing)
        other = genuine.replace(b"acc-1", b"acc-3")
        answers["queue down"] = invoke_receiver(signed(other))[0]
        reset_receiver_state()
        boto3.client("secretsmanager").delete_secret(SecretId=stack_in_process.secrets["WebhookSecret"],
                                                     ForceDeleteWithoutRecovery=True)
        answers["secret unreadable"] = invoke_receiver(signed(other))[0]
    reset_receiver_state()

    # Then each was answered as the rules say (the marked values really went through)...
    assert answers == {**{name: status for name, _, status in cases}, "queue down": 503, "secret unreadable": 503}
    queued = boto3.client("sqs").receive_message(QueueUrl=stack_in_process.queue_urls["EventsQueue"],
                                                 MaxNumberOfMessages=10)["Messages"]
    assert any(BODY_MARK in m["Body"] for m in queued)
    # ...each wrote its telemetry line...
    text = capture.text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]
    assert sorted(line["status"] for line in lines) == sorted(answers.values())
    assert {line.get("reason") for line in lines} >= {"signature_mismatch", "missing_signature", "not_json",
                                                      "no_event", "not_utf8", "bad_base64", "too_large",
                                                      "queue_unavailable", "secret_unavailable"}
    # ...and no log holds the body, the secret or a signature
    assert_no_marker(text, signatures)


# --- the sync ------------------------------------------------------------------------------------

class MarkedArgyle:
    """The sandbox's documents with a marked address and amount; an activity in `malformed` gets an
    `updated_at` that is the address, which the sync reads and the project's model rejects."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.malformed: set[str] = set()
        original = argyle_sandbox.http_api.render_object

        def render(account: Any, record: Any, api: Any = V1) -> dict[str, Any]:
            doc = original(account, record, api)
            doc["start_location"]["formatted_address"] = ADDRESS
            doc["income"]["total"] = AMOUNT
            if record.id in self.malformed:
                doc["updated_at"] = ADDRESS
            return doc

        # What the API serves, and what sandbox.truth() reports: the same documents.
        monkeypatch.setattr(argyle_sandbox.http_api, "render_object", render)
        monkeypatch.setattr(argyle_sandbox.state, "render_object", render)


@pytest.fixture
def marked(monkeypatch: pytest.MonkeyPatch) -> MarkedArgyle:
    return MarkedArgyle(monkeypatch)


@pytest.fixture
def sandbox(marked: MarkedArgyle) -> Iterator[SandboxServer]:
    with SandboxServer(seed=21, api_key_id=API_KEY_ID, api_key_secret=API_KEY_SECRET,
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        yield server
    sync_handler.set_runtime(None)


@pytest.fixture
def inbox(sandbox: SandboxServer) -> Iterator[RecordingServer]:
    """Receives the sandbox's webhooks, whose `name` (the subscription's) carries the body marker."""
    server = RecordingServer().start()
    sandbox.subscribe(f"{server.url}/webhooks/argyle", events=["*"], secret=WEBHOOK_SECRET, name=BODY_MARK,
                      config={"days_synced": 30})
    yield server
    server.stop()


def delivered(sandbox: SandboxServer, inbox: RecordingServer) -> list[bytes]:
    sandbox.wait_for_deliveries(20)
    bodies = [r.body for r in inbox.requests]
    inbox.requests.clear()
    return bodies


def new_sync(stack: StackResources, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, *,
             key_secret: str = API_KEY_SECRET, page_limit: int = 10) -> SyncHarness:
    """The sync function with template.yaml's environment (dev stage), against the sandbox."""
    for name, value in function_environment("SyncFunction", stack).items():
        monkeypatch.setenv(name, value)
    return SyncHarness(stack, monkeypatch, base_url=sandbox.base_url, api_key_id=API_KEY_ID,
                       api_key_secret=key_secret, page_limit=page_limit)


def invoke_once(harness: SyncHarness) -> set[str]:
    """One Lambda invocation on what the queue hands out now; the ids of the records that failed."""
    messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10,
                                           AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    return harness.invoke(messages, FakeLambdaContext())


def activities(stack: StackResources, account: str) -> list[dict[str, Any]]:
    return list(ActivityStore(stack.tables["ActivitiesTable"], boto3.client("dynamodb")).activities(account))


def test_sync_of_every_event_type_logs_no_activity_data_or_key(
        stack_in_process: StackResources, sandbox: SandboxServer, inbox: RecordingServer,
        monkeypatch: pytest.MonkeyPatch, capture: LogCapture) -> None:
    # Given the sync, and a user whose profile (sent in users.fully_synced) carries the marker
    harness = new_sync(stack_in_process, sandbox, monkeypatch)
    user = sandbox.state.create_user()
    user.external_metadata = {"note": BODY_MARK}
    _, account = sandbox.connect_account(user.id, n_activities=45, years=0.5, undated=1)
    bodies = delivered(sandbox, inbox)
    signatures = [sign(body, WEBHOOK_SECRET) for body in bodies]

    # When the connection's webhooks are synced, each listing in parts (one page per invocation)
    for body in bodies:
        assert harness.receive_webhook(body) == 202
    harness.drain(context=lambda: FakeLambdaContext(60_000))
    # And a periodic scan's added, updated and removed, and an event the sync only archives
    sandbox.periodic_scan(account, add=4, update=3, remove=2)
    sandbox.send_event("accounts.updated", {"account": account, "user": user.id, "note": BODY_MARK})
    scan = delivered(sandbox, inbox)
    signatures += [sign(body, WEBHOOK_SECRET) for body in scan]
    for body in scan:
        assert harness.receive_webhook(body) == 202
    report = harness.drain()

    # Then every event was synced, the marked values stored and archived...
    assert report.failed == 0
    events = {json.loads(b)["event"] for b in bodies + scan}
    assert events == {"accounts.connected", "activities.partially_synced", "activities.fully_synced",
                      "users.fully_synced", "activities.added", "activities.updated", "activities.removed",
                      "accounts.updated"}
    state = SyncStateStore(stack_in_process.tables["SyncStateTable"], boto3.client("dynamodb"))
    assert set(state.event_counts()) == events
    stored = activities(stack_in_process, account)
    assert len(stored) == 45 + 1 + 4 - 2
    assert all(item["activity"]["start_location"]["formatted_address"] == ADDRESS
               and item["activity"]["income"]["total"] == AMOUNT for item in stored)
    assert state.user(user.id)["resource"]["external_metadata"] == {"note": BODY_MARK}  # type: ignore[index]
    # ...the logs said so, continuations included...
    text = capture.text()
    processed = [line for line in text.splitlines() if '"message processed"' in line]
    assert len(processed) >= len(events)
    assert any('"continuation_part"' in line for line in processed)
    # ...and when the worker revokes access, the purge logs ids and counts only...
    sandbox.revoke(account)
    removal = delivered(sandbox, inbox)
    signatures += [sign(body, WEBHOOK_SECRET) for body in removal]
    for body in removal:
        assert harness.receive_webhook(body) == 202
    assert harness.drain().failed == 0
    assert activities(stack_in_process, account) == []
    text = capture.text()
    purged = [json.loads(line) for line in text.splitlines() if '"account purged"' in line]
    # (one record, seen on both channels the capture reads)
    assert purged and all(p["deleted"] == {"activities": 50, "archived_events": 9, "user_profiles": 1}
                          for p in purged)
    # ...and none holds a body, an address, an amount, a key or a signature
    assert_no_marker(text, signatures)


def test_sync_failures_and_the_dlq_log_no_activity_data_or_key(
        stack_in_process: StackResources, sandbox: SandboxServer, inbox: RecordingServer, marked: MarkedArgyle,
        monkeypatch: pytest.MonkeyPatch, capture: LogCapture) -> None:
    # Given an account at Argyle, and the sync configured with API keys Argyle rejects (401)
    _, account = sandbox.connect_account(n_activities=25, years=0.2)
    bodies = [b for b in delivered(sandbox, inbox) if json.loads(b)["event"] == "activities.fully_synced"]
    signatures = [sign(body, WEBHOOK_SECRET) for body in bodies]
    broken = new_sync(stack_in_process, sandbox, monkeypatch, key_secret=WRONG_KEY_SECRET)
    broken.receive_webhook(bodies[0])
    # When the queue drains: every receive fails, then SQS moves the message to the DLQ
    report = broken.drain()
    assert (report.failed, broken.dlq_bodies()) == (5, [bodies[0].decode()])

    # And, the keys fixed, the operator redrives it; Argyle then answers a storm of 429s, one of
    # 500s, and an activity the project's model cannot read, one invocation each
    fixed = new_sync(stack_in_process, sandbox, monkeypatch)
    assert redrive.main(["--queue-url", fixed.queue_url, "--dlq-url", fixed.dlq_url]) == 0
    sandbox.faults.update({"rate_limit_next": 4, "retry_after": "0"})
    assert len(invoke_once(fixed)) == 1
    sandbox.faults.update({"fail_next": 4})
    assert len(invoke_once(fixed)) == 1
    sandbox.faults.reset()
    marked.malformed.add(sandbox.truth(account)[3]["id"])
    assert len(invoke_once(fixed)) == 1
    # And a signed webhook arrives whose data the sync cannot read (its account is not a string)
    bad = json.dumps({"event": "activities.removed", "name": BODY_MARK,
                      "data": {"account": [BODY_MARK, ADDRESS], "removed_activities": [AMOUNT]}}).encode()
    signatures.append(sign(bad, WEBHOOK_SECRET))
    assert fixed.receive_webhook(bad) == 202
    marked.malformed.clear()
    fixed.drain()

    # Then the redriven webhook synced, and the unreadable one waits in the DLQ
    assert len(activities(stack_in_process, account)) == 25
    assert fixed.dlq_bodies() == [bad.decode()]
    text = capture.text()
    for expected in ("Argyle rejected the API keys", "sync failed, SQS will retry the message",
                     "message is not a webhook the sync can read", "message processed"):
        assert expected in text, expected
    # And no log holds a body, an address, an amount, a key or a signature
    assert_no_marker(text, signatures)


# --- the capture itself ----------------------------------------------------------------------------

def _chained(value: str) -> BaseException:
    try:
        try:
            raise ValueError(value)
        except ValueError as inner:
            raise RuntimeError("the sync failed") from inner
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("channel", ["powertools", "library logger", "print", "stderr", "lambda error"])
def test_the_capture_sees_a_marker_on_every_channel(channel: str, capture: LogCapture) -> None:
    # Given a marker written to one channel
    emit: dict[str, Callable[[], Any]] = {
        "powertools": lambda: sync_handler.logger.debug("canary", value=ADDRESS),
        "library logger": lambda: logging.getLogger("botocore.canary").info("canary %s", ADDRESS),
        "print": lambda: print(f"canary {ADDRESS}"),
        "stderr": lambda: sys.stderr.write(f"canary {ADDRESS}\n"),
        "lambda error": lambda: capture.lambda_error(_chained(ADDRESS)),  # the cause, two levels down
    }
    emit[channel]()
    # When the logs are searched, then the marker is found
    with pytest.raises(AssertionError, match="address"):
        assert_no_marker(capture.text(), [])
