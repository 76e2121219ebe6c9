"""The receiver under hostile and malformed input (hypothesis): whatever API Gateway hands it,

- it never answers 5xx unless an AWS fault was injected (and then 503, so Argyle retries);
- nothing reaches the queue without a valid signature over the exact bytes;
- every validly signed event (a JSON object with a non-empty string `event`) is enqueued exactly
  once, with its exact raw bytes, its SHA-256 as deduplication id and a valid message group;
- each request writes exactly one telemetry line.

Most properties drive `receiver_handler.lambda_handler` with the real EventQueue over an in-memory
SQS client (fast, and able to fail on demand); one runs against template.yaml's queue in moto's
in-process mock, with SQS failing before or after storing the message, and Argyle retrying.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import io
import json
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from argyle_pipeline.aws.event_queue import DEFAULT_MAX_MESSAGE_BYTES, EventQueue, decode_body
from argyle_pipeline.aws.secret_values import SecretUnavailable
from argyle_pipeline.receiving.signature import sign
from local_stack.lambda_runtime import LambdaContext, environment, function_environment
from local_stack.template_resources import StackResources
from tests.support.receiver_harness import reset_receiver_state

SECRET = "fuzz-webhook-secret"
OTHER_SECRET = "not-the-webhook-secret"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/fuzz-EventsQueue.fifo"
HEADER = "X-Argyle-Signature"

# Deterministic and database-free: CI sees the same examples on every run.
FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# --- an in-memory SQS client, and the receiver around it ---------------------------------------

def sqs_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "injected"}}, "SendMessage")


AWS_FAULTS: dict[str, Callable[[], Exception]] = {
    "throttled": lambda: sqs_error("ThrottlingException"),
    "unavailable": lambda: sqs_error("ServiceUnavailable"),
    "kms": lambda: sqs_error("KmsThrottled"),
    "no queue": lambda: sqs_error("AWS.SimpleQueueService.NonExistentQueue"),
    "connection": lambda: EndpointConnectionError(endpoint_url=QUEUE_URL),
    "read timeout": lambda: ReadTimeoutError(endpoint_url=QUEUE_URL),
}


# What SQS accepts (SendMessage API reference), which moto does not check.
GROUP_ID_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
SQS_TEXT = re.compile("[\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def refuse(message: str) -> ClientError:
    return ClientError({"Error": {"Code": "InvalidParameterValue", "Message": message}}, "SendMessage")


@dataclass
class InMemorySqs:
    """The one SQS call EventQueue makes, checked as SQS (and botocore before it) would check it;
    records what was sent, or raises `fault`."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    fault: Exception | None = None

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        if self.fault is not None:
            raise self.fault
        texts = [kwargs["MessageBody"], kwargs["MessageGroupId"], kwargs["MessageDeduplicationId"]]
        texts += [v["StringValue"] for v in kwargs["MessageAttributes"].values()]
        for text in texts:
            text.encode("utf-8")  # botocore serializes with UTF-8: a lone surrogate raises here
        for name in ("MessageGroupId", "MessageDeduplicationId"):
            value = kwargs[name]
            if not 0 < len(value) <= 128 or not set(value) <= GROUP_ID_CHARS:
                raise refuse(f"{name} {value!r} is not 1-128 alphanumeric or punctuation characters")
        if not kwargs["MessageBody"] or not SQS_TEXT.fullmatch(kwargs["MessageBody"]):
            raise refuse("Invalid binary character in the message body")
        for name, attribute in kwargs["MessageAttributes"].items():
            if not ATTRIBUTE_NAME.fullmatch(name) or not attribute["StringValue"] \
                    or not SQS_TEXT.fullmatch(attribute["StringValue"]):
                raise refuse(f"message attribute {name!r} is invalid")
        self.sent.append(kwargs)
        return {"MessageId": f"m-{len(self.sent)}"}


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    sent: list[dict[str, Any]]
    log_lines: list[dict[str, Any]]


class Receiver:
    """receiver_handler.lambda_handler with the real EventQueue on an in-memory client."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sqs = InMemorySqs()
        self.log = io.StringIO()
        self.secret_fault: Exception | None = None
        monkeypatch.setenv("EVENTS_QUEUE_URL", QUEUE_URL)
        monkeypatch.setenv("WEBHOOK_SECRET_ID", "fuzz-secret-id")
        monkeypatch.delenv("VERIFY_SOURCE_IP", raising=False)
        monkeypatch.delenv("MAX_MESSAGE_BYTES", raising=False)
        # The module the harness resets (the local stack may have re-imported it since collection).
        self.handler = importlib.import_module("receiver_handler")
        monkeypatch.setattr(self.handler, "webhook_secrets", self._secrets)
        monkeypatch.setattr(self.handler.telemetry, "stream", self.log)
        reset_receiver_state()
        self.handler.set_queue(EventQueue(QUEUE_URL, self.sqs))

    def _secrets(self, secret_id: str, max_age: int = 300, *, force: bool = False) -> tuple[str, ...]:
        if self.secret_fault is not None:
            raise self.secret_fault
        return (SECRET,)

    def __call__(self, event: dict[str, Any]) -> Answer:
        self.sqs.sent.clear()
        self.log.seek(0)
        self.log.truncate()
        response = self.handler.lambda_handler(event, LambdaContext("ReceiverFunction", timeout_seconds=10))
        lines = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return Answer(response["statusCode"], json.loads(response["body"]), list(self.sqs.sent), lines)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    yield Receiver(monkeypatch)
    reset_receiver_state()


# --- what API Gateway may hand over ------------------------------------------------------------

@dataclass
class Delivery:
    """A request as API Gateway's HTTP API (payload 2.0) would pass it, and what Argyle signed."""

    signed_body: bytes  # the bytes the signature (if any) was computed over
    event: dict[str, Any]
    transport: str
    received: bytes | None  # the bytes the receiver gets after decoding; None: not the signed ones
    presented: list[str]  # every signature value in the request
    effective: str | None  # the header value the receiver reads (names are case-insensitive, last wins)

    def expected(self) -> int:
        """The answer when AWS works."""
        if self.transport == "invalid-base64":
            return 400
        if self.received is None or not verifies(self.received, self.effective):
            return 401
        return 202 if is_webhook(self.received) else 400


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Text SQS cannot carry as it is, or that JSON can hold but UTF-8 cannot (lone surrogates).
awkward = st.sampled_from(["a b", "\x1f", "é", "\uffff", "\ufffe", "\ud800", "x\udfff", "\x00", "a" * 101])
event_names = st.sampled_from(["activities.added", "activities.updated", "activities.removed",
                               "activities.fully_synced", "activities.partially_synced", "users.fully_synced",
                               "accounts.added", "gigs.added"]) | st.text(min_size=1, max_size=40) | awkward
ids = st.uuids().map(str) | st.text(max_size=150) | awkward


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Webhook-shaped objects, with odd ids and extra fields."""
    data = draw(st.fixed_dictionaries({}, optional={"account": ids, "user": ids, "available_count": st.integers(),
                                                    "removed_activities": st.lists(ids, max_size=3)}))
    data.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    doc = {"event": draw(event_names), "name": draw(st.text(max_size=20)), "data": data}
    doc.update(draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in doc), json_values, max_size=2)))
    return doc


@st.composite
def rendered(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """A JSON document rendered the many ways a sender may render it."""
    doc = draw(documents)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), sort_keys=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 0, 2])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" ,", " :  ")])))
    return text.encode("utf-8", errors="surrogatepass")  # a raw lone surrogate: not UTF-8 any more


def nested(depth: int, closed: bool, kind: str) -> bytes:
    opening, closing = ('{"a":', "}") if kind == "object" else ("[", "]")
    inner = opening * depth + "1" + (closing * depth if closed else "")
    return ('{"event": "activities.added", "data": ' + inner + "}").encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid webhook with a few bytes flipped, inserted or cut."""
    body = bytearray(draw(rendered(envelopes())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=3))
        else:
            del body[at:at + draw(st.integers(1, 3))]
    return bytes(body)


@st.composite
def re_encoded(draw: st.DrawFn) -> bytes:
    """Valid JSON in another encoding, with a BOM, or holding characters SQS cannot carry."""
    doc = draw(envelopes())
    if draw(st.booleans()):
        doc["data"]["odd"] = draw(st.sampled_from(["\uffff", "\ufffe", "\x00", "\ud7ff\ue000", "\U0010ffff", "\x7f"]))
    text = json.dumps(doc, ensure_ascii=False)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"]))
    return text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")


bodies = st.one_of(
    rendered(envelopes()),
    rendered(json_values),  # not objects, or objects without a string event
    rendered(st.fixed_dictionaries({"event": json_values.filter(lambda v: not isinstance(v, str))})),
    st.just(b'{"event": ""}'),
    mutated(),
    re_encoded(),
    st.binary(max_size=300),
    st.builds(nested, st.sampled_from([1, 40, 800, 60_000, 200_000]), st.booleans(), st.sampled_from(["array",
                                                                                                      "object"])),
)

hex_digits = st.text(alphabet="0123456789abcdef", min_size=128, max_size=128)


@st.composite
def signatures(draw: st.DrawFn, body: bytes) -> str | None:
    kind = draw(st.sampled_from(["valid", "valid", "valid-odd-case-and-space", "missing", "empty", "garbage-hex",
                                 "non-hex", "huge", "other-secret", "other-body", "truncated", "non-ascii"]))
    good = sign(body, SECRET)
    return {
        "valid": good,
        "valid-odd-case-and-space": " " + "".join(c.upper() if draw(st.booleans()) else c for c in good) + "\t",
        "missing": None,
        "empty": "",
        "garbage-hex": draw(hex_digits),
        "non-hex": draw(st.text(min_size=1, max_size=200)),
        "huge": good * 2_000,
        "other-secret": sign(body, OTHER_SECRET),
        "other-body": sign(body + b" ", SECRET),
        "truncated": good[:-1],
        "non-ascii": good[:-1] + "é",
    }[kind]


def random_case(draw: st.DrawFn, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    body = draw(bodies)
    signature = draw(signatures(body))
    headers: dict[str, Any] = {"content-type": "application/json", "user-agent": "Argyle-Webhooks"}
    presented: list[str] = []
    if signature is not None:
        headers[random_case(draw, HEADER)] = signature
        presented.append(signature)
    extra = draw(st.sampled_from(["none", "none", "same-name-other-case", "comma-joined", "non-string"]))
    if extra == "same-name-other-case":  # two spellings of the header: the later one is read
        other = draw(st.sampled_from([sign(body, SECRET), draw(hex_digits), ""]))
        name = random_case(draw, HEADER)
        if headers.pop(name, None) is not None:
            presented.clear()
        headers[name] = other
        presented.append(other)
    elif extra == "comma-joined" and signature is not None:  # API Gateway joins repeated headers with ","
        name = next(n for n in headers if n.lower() == HEADER.lower())
        second = draw(st.sampled_from([signature, draw(hex_digits)]))
        headers[name] = f"{signature},{second}"
        presented.append(second)
    elif extra == "non-string":
        headers["x-argyle-signature-count"] = 2
    effective = None
    for name, value in headers.items():
        if name.lower() == HEADER.lower() and isinstance(value, str):
            effective = value

    transport = draw(st.sampled_from(["base64", "text", "text", "invalid-base64", "missing-flag", "escaped-text"]))
    received: bytes | None = body
    if transport == "base64":
        payload, is_b64 = base64.b64encode(body).decode(), True
    elif transport == "invalid-base64":
        payload = base64.b64encode(body).decode() + draw(st.sampled_from(["!", "=", "*", " x"]))
        is_b64, received = True, None
    else:
        is_b64 = False
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            # Not UTF-8 as text: API Gateway base64-encodes it; a broken proxy might escape it
            # (lone surrogates in the event's JSON), and then the bytes are not the signed ones.
            if transport == "escaped-text":
                payload, received = body.decode("utf-8", errors="surrogateescape"), None
            else:
                payload, is_b64, transport = base64.b64encode(body).decode(), True, "base64"
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "POST /webhooks/argyle", "rawPath": "/webhooks/argyle",
        "headers": headers, "body": payload,
        "requestContext": {"requestId": draw(st.text(alphabet=string.ascii_letters, max_size=20)),
                           "http": {"method": "POST", "sourceIp": "34.27.251.226"}},
    }
    if transport != "missing-flag":
        event["isBase64Encoded"] = is_b64
    return Delivery(body, event, transport, received, presented, effective)


# --- the oracle ----------------------------------------------------------------------------------

def verifies(body: bytes, value: str | None) -> bool:
    return value is not None and value.strip().lower() == sign(body, SECRET)


def is_webhook(body: bytes) -> bool:
    """A JSON object with a non-empty string `event` (what the receiver must accept when signed)."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("event"), str) and doc["event"] != ""


def assert_enqueued_exactly(answer: Answer, body: bytes) -> None:
    (message,) = answer.sent
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert decode_body(message["MessageBody"], attributes["body_encoding"]) == body
    assert attributes["dedupe_key"] == hashlib.sha256(body).hexdigest()
    # SQS's deduplication id is the delivery's (the body's hash continued with the request id)
    dedupe_id = message["MessageDeduplicationId"]
    assert len(dedupe_id) == 64 and set(dedupe_id) <= set("0123456789abcdef") and dedupe_id != attributes["dedupe_key"]
    group = message["MessageGroupId"]
    assert 0 < len(group) <= 128 and group.isascii() and group.isprintable()


# --- properties ----------------------------------------------------------------------------------

@FUZZ
@given(delivery=deliveries())
def test_any_request_is_answered_without_5xx_and_only_signed_events_are_enqueued(receiver: Receiver,
                                                                                 delivery: Delivery) -> None:
    # Given any request API Gateway may pass on (and no AWS fault)
    # When the receiver handles it
    answer = receiver(delivery.event)

    # Then it never answers 5xx, and writes exactly one telemetry line saying what it answered
    assert answer.status < 500, answer
    (line,) = answer.log_lines
    assert line["status"] == answer.status
    # And nothing is enqueued unless a presented signature is valid for the bytes received
    if answer.sent:
        assert delivery.received is not None
        assert any(verifies(delivery.received, value) for value in delivery.presented)
    # And the answer is what the rules say: a genuine event is enqueued once, byte for byte
    assert answer.status == delivery.expected(), answer
    if answer.status == 202:
        assert delivery.received is not None
        assert_enqueued_exactly(answer, delivery.received)
    else:
        assert answer.sent == []


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivery=deliveries(), fault=st.sampled_from(sorted(AWS_FAULTS)), where=st.sampled_from(["sqs", "secret"]))
def test_an_aws_fault_is_503_never_2xx_and_never_a_rejection_of_a_genuine_event(
        receiver: Receiver, delivery: Delivery, fault: str, where: str) -> None:
    # Given SQS, or Secrets Manager, failing
    receiver.sqs.fault = AWS_FAULTS[fault]() if where == "sqs" else None
    receiver.secret_fault = SecretUnavailable("injected") if where == "secret" else None
    # When a request arrives
    answer = receiver(delivery.event)
    # Then nothing is enqueued; a genuine event is answered 503 (Argyle retries), never 2xx or 4xx
    assert answer.sent == []
    expected = delivery.expected()
    if expected == 202:
        assert answer.status == 503, answer
        assert answer.body["error"].endswith("retry later")
    elif where == "secret" and delivery.transport != "invalid-base64":
        assert answer.status == 503  # unverifiable: fail closed, but with a status Argyle retries
    else:
        assert answer.status == expected
    (line,) = [line for line in answer.log_lines if "status" in line]  # plus an error line for the secret
    assert line["status"] == answer.status


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.integers(-3, 3), multibyte=st.booleans(), as_base64=st.booleans())
def test_size_limit_is_413_exactly_past_what_sqs_takes(receiver: Receiver, extra: int, multibyte: bool,
                                                       as_base64: bool) -> None:
    # Given a signed body padded to within a few bytes of the queue's limit (body plus attributes)
    def body_of(pad: int) -> bytes:
        filler = ("é" * (pad // 2) + "x" * (pad % 2)) if multibyte else "x" * pad
        return json.dumps({"event": "activities.added", "data": {"account": "a", "pad": filler}},
                          ensure_ascii=False).encode()

    def event_for(body: bytes) -> dict[str, Any]:
        payload = base64.b64encode(body).decode() if as_base64 else body.decode()
        return {"headers": {HEADER: sign(body, SECRET)}, "body": payload, "isBase64Encoded": as_base64,
                "requestContext": {"requestId": "size"}}

    probe = body_of(0)
    (sent,) = receiver(event_for(probe)).sent  # SQS also counts each attribute's name, type and value
    overhead = sum(len(k) + len(v["DataType"]) + len(v["StringValue"]) for k, v in sent["MessageAttributes"].items())
    pad = DEFAULT_MAX_MESSAGE_BYTES - overhead - len(probe) + extra
    body = body_of(pad)
    # When it is delivered
    answer = receiver(event_for(body))
    # Then it is enqueued whole while it fits, and 413 (nothing enqueued) once it does not
    if len(body) + overhead <= DEFAULT_MAX_MESSAGE_BYTES:
        assert answer.status == 202
        assert_enqueued_exactly(answer, body)
    else:
        assert (answer.status, answer.sent) == (413, [])


def test_a_text_body_with_a_lone_surrogate_is_a_client_error_not_a_crash(receiver: Receiver) -> None:
    # Given an event whose text body holds a code point no UTF-8 byte sequence decodes to (API
    # Gateway never sends one, but the event is JSON and "\ud800" is valid JSON)
    for body in ('{"event": "activities.added", "x": "\ud800"}', "\udcff"):
        # When the receiver handles it, signed or not
        for headers in ({}, {HEADER: "0" * 128}):
            answer = receiver({"headers": headers, "body": body, "isBase64Encoded": False})
            # Then it is rejected (the bytes cannot be what Argyle signed), not a 500
            assert answer.status == 401 and answer.sent == []


def test_base64_that_only_decodes_leniently_is_rejected(receiver: Receiver) -> None:
    # Given a genuine body, base64-encoded with characters a lenient decoder would skip
    body = b'{"event": "activities.added", "data": {"account": "a"}}'
    payload = base64.b64encode(body).decode()
    for broken in (payload[:10] + "\n" + payload[10:], payload + "!!", "*" + payload):
        with pytest.raises(binascii.Error):
            base64.b64decode(broken, validate=True)
        # When it is delivered with the base64 flag set
        answer = receiver({"headers": {HEADER: sign(body, SECRET)}, "body": broken, "isBase64Encoded": True})
        # Then it is a bad request, and nothing is enqueued
        assert (answer.status, answer.sent) == (400, [])


# --- against template.yaml's queue in moto, with SQS failing ---------------------------------------

class FailingSqs:
    """A real (moto) SQS client whose send_message fails as `plan` says, call by call:
    "ok", "refused" (an error before anything is stored), or "lost" (stored, but the answer is lost
    on the way back, so the receiver cannot know)."""

    def __init__(self, client: Any, plan: list[str]) -> None:
        self._client = client
        self.plan = list(plan)

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "refused":
            raise sqs_error("ServiceUnavailable")
        response = self._client.send_message(**kwargs)
        if step == "lost":
            raise ReadTimeoutError(endpoint_url=kwargs["QueueUrl"])
        return dict(response)


@pytest.fixture
def moto_receiver(stack_in_process: StackResources) -> Iterator[StackResources]:
    boto3.client("secretsmanager").put_secret_value(SecretId=stack_in_process.secrets["WebhookSecret"],
                                                    SecretString=json.dumps({"current": SECRET, "previous": ""}))
    reset_receiver_state()
    with environment(function_environment("ReceiverFunction", stack_in_process)):
        yield stack_in_process
    reset_receiver_state()


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                       AttributeNames=["All"]).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)
    return messages


_round = iter(range(1_000_000))


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(accounts=st.lists(st.sampled_from(["acc-1", "acc-2", "acc-3"]), min_size=1, max_size=6),
       plan=st.lists(st.sampled_from(["ok", "ok", "refused", "lost"]), max_size=12),
       forged=st.integers(0, 2))
def test_with_sqs_failing_argyles_retries_store_every_event_once_and_nothing_forged(
        moto_receiver: StackResources, accounts: list[str], plan: list[str], forged: int) -> None:
    # Given the receiver on template.yaml's queue, whose SQS client fails as planned
    sqs = boto3.client("sqs")
    queue_url = moto_receiver.queue_urls["EventsQueue"]
    handler = importlib.import_module("receiver_handler")
    handler.set_queue(EventQueue(queue_url, FailingSqs(sqs, plan)))
    run = next(_round)
    events = [json.dumps({"event": "activities.added", "data": {"account": account, "n": f"{run}-{i}"}}).encode()
              for i, account in enumerate(accounts)]
    context = LambdaContext("ReceiverFunction", timeout_seconds=10)

    def deliver(body: bytes, signature: str) -> int:
        response = handler.lambda_handler(
            {"headers": {HEADER: signature}, "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
             "requestContext": {"requestId": f"r{run}"}}, context)
        return int(response["statusCode"])

    # When Argyle delivers each event, retrying on anything but 2xx, and forgeries arrive meanwhile
    statuses: list[int] = []
    for body in events:
        for _attempt in range(20):
            statuses.append(deliver(body, sign(body, SECRET)))
            if statuses[-1] == 202:
                break
        for n in range(forged):
            forgery = body.replace(b"activities.added", b"activities.removed") + str(n).encode()
            assert deliver(forgery, sign(forgery, OTHER_SECRET)) == 401

    # Then each attempt SQS failed was answered 503, each other one 202: every event was accepted
    assert statuses == [503 if step != "ok" else 202 for step in (plan + ["ok"] * len(statuses))[:len(statuses)]]
    assert statuses.count(202) == len(events)
    # And the queue holds each event exactly once (a stored-but-unanswered send included), byte for
    # byte, and nothing forged
    stored = [decode_body(m["Body"], m["MessageAttributes"]["body_encoding"]["StringValue"])
              for m in drain(sqs, queue_url)]
    assert sorted(stored) == sorted(events)


@pytest.mark.parametrize("event_name, data", [
    ("activities.added", {"account": "acc 1"}),  # a space: printable, but not allowed in a group id
    ("activities.added", {"account": "café", "user": "u\x1f"}),
    ("new event\uffff", {}),  # no account or user: grouped by event name, which SQS cannot take as it is
    ("\ud800", {}),  # a lone surrogate from a JSON escape: botocore cannot even encode it
])
def test_a_signed_event_sqs_cannot_group_or_label_as_it_is_is_still_enqueued(
        receiver: Receiver, event_name: str, data: dict[str, Any]) -> None:
    # Given a genuine event whose account, user or event name SQS refuses in a group id or attribute
    body = json.dumps({"event": event_name, "data": data}).encode()
    # When it is delivered
    answer = receiver({"headers": {HEADER: sign(body, SECRET)}, "body": body.decode(), "isBase64Encoded": False})
    # Then it is accepted and enqueued unchanged (only the routing labels are made safe)
    assert answer.status == 202, answer
    assert_enqueued_exactly(answer, body)
