from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from argyle_pipeline.aws.event_queue import (
    MessageTooLarge,
    QueuedEvent,
    QueueUnavailable,
    decode_body,
    dedupe_key,
    encode_body,
)
from argyle_pipeline.receiving.signature import sign
from argyle_pipeline.receiving.webhook_intake import (
    ARGYLE_WEBHOOK_IPS,
    BadRequestBody,
    WebhookRequest,
    handle_webhook,
    request_from_apigw,
)

SECRET = "unit-secret"
ACCOUNT = "12db5af4-fd5f-4d1f-bd98-0360df770aa8"
USER = "abdb5af4-fd5f-4d1f-bd10-0360df77012c"


class FakeQueue:
    """Records what would be sent; can be told to fail or to refuse large messages."""

    def __init__(self, *, fail: bool = False, max_bytes: int = 262_144) -> None:
        self.sent: list[QueuedEvent] = []
        self.fail = fail
        self.max_bytes = max_bytes

    def send(self, event: QueuedEvent) -> str:
        if event.size() > self.max_bytes:
            raise MessageTooLarge("too big")
        if self.fail:
            raise QueueUnavailable("ServiceUnavailable")
        self.sent.append(event)
        return f"msg-{len(self.sent)}"


def signed_request(body: bytes, *, secret: str = SECRET, header: str = "x-argyle-signature",
                   source_ip: str | None = "34.27.251.226") -> WebhookRequest:
    return WebhookRequest(body=body, headers={header.lower(): sign(body, secret)}, source_ip=source_ip,
                          request_id="req-1")


def payload(event: str = "activities.added", **data: object) -> bytes:
    return json.dumps({"event": event, "name": "n", "data": {"account": ACCOUNT, "user": USER, **data}}).encode()


def test_genuine_event_is_enqueued_raw_with_group_dedupe_and_attributes() -> None:
    # Given a signed activities.added webhook
    body = payload(added_count=3)
    queue = FakeQueue()
    # When it is received
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue, now_ms=lambda: 1234)
    # Then it is accepted and queued byte for byte, in the account's group
    assert result.status == 202 and result.body["status"] == "accepted"
    (sent,) = queue.sent
    assert sent.body == body
    assert sent.group_id == f"account:{ACCOUNT}"
    assert sent.dedupe_key == dedupe_key(body) == result.body["dedupe_key"]
    attrs = sent.attributes()
    assert attrs["event"]["StringValue"] == "activities.added"
    assert attrs["dedupe_key"]["StringValue"] == dedupe_key(body)
    assert attrs["received_at_ms"] == {"DataType": "Number", "StringValue": "1234"}


def test_a_webhook_without_a_request_id_is_still_followed_by_the_start_of_its_dedupe_key() -> None:
    # Given a signed webhook that came with no request id (a direct invoke, not API Gateway)
    body = payload(added_count=1)
    request = signed_request(body)
    request.request_id = ""
    queue = FakeQueue()
    # When it is received
    handle_webhook(request, lambda: [SECRET], queue)
    # Then its message still carries a correlation id for the sync's log lines: the first 32
    # characters of its dedupe key (the same in every delivery of these bytes, and in the logs)
    (sent,) = queue.sent
    assert sent.correlation_id == dedupe_key(body)[:32] and len(sent.correlation_id) == 32
    # and with a request id, that is the correlation id
    handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert queue.sent[-1].correlation_id == "req-1"


def test_users_events_are_grouped_by_user() -> None:
    body = json.dumps({"event": "users.fully_synced", "data": {"user": USER, "resource": {"id": USER}}}).encode()
    queue = FakeQueue()
    handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert queue.sent[0].group_id == f"user:{USER}"


@pytest.mark.parametrize(("data", "group"), [
    ({"user": USER}, f"user:{USER}"),  # an account-less event of a user keeps the user's order
    ({}, "event:" + "e" * 100),  # neither: the event's name, cut to keep SQS's 128-character limit
])
def test_an_event_without_an_account_is_grouped_by_its_user_or_else_its_name(data: dict, group: str) -> None:
    body = json.dumps({"event": "e" * 150, "data": data}).encode()
    queue = FakeQueue()
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert result.status == 202 and queue.sent[0].group_id == group


def test_a_signature_header_that_is_not_text_is_refused_not_a_crash() -> None:
    # API Gateway sends strings; a malformed event (a test tool, a proxy) may not
    body = payload()
    event = {"body": body.decode(), "headers": {"X-Argyle-Signature": 12345, "Content-Type": None},
             "requestContext": {"requestId": "r"}}
    request = request_from_apigw(event)
    result = handle_webhook(request, lambda: [SECRET], FakeQueue())
    assert "x-argyle-signature" not in request.headers and result.status == 401


def test_event_types_the_sync_ignores_are_still_enqueued() -> None:
    body = json.dumps({"event": "accounts.added", "name": "Account added"}).encode()
    queue = FakeQueue()
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert result.status == 202
    assert queue.sent[0].group_id == "event:accounts.added"


@pytest.mark.parametrize(
    ("request_", "reason", "answer"),
    [
        # The sender is told the header is missing (a misconfigured proxy that strips it is found at once)
        (WebhookRequest(b'{"event": "x"}', {}, None, "r"), "missing_signature", "missing X-Argyle-Signature header"),
        # A wrong signature is told nothing about why
        (signed_request(b'{"event": "x"}', secret="wrong"), "signature_mismatch", "invalid signature"),
    ],
)
def test_unsigned_or_forged_is_401_saying_whether_the_header_was_missing_and_nothing_enqueued(
        request_: WebhookRequest, reason: str, answer: str) -> None:
    queue = FakeQueue()
    result = handle_webhook(request_, lambda: [SECRET], queue)
    assert (result.status, result.outcome, result.body) == (401, reason, {"error": answer})
    assert queue.sent == []


def test_no_secret_configured_is_401() -> None:
    queue = FakeQueue()
    result = handle_webhook(signed_request(b'{"event": "x"}', secret=""), lambda: [], queue)
    assert (result.status, result.outcome) == (401, "no_secret_configured")
    # The caller learns nothing of the stack's configuration: the answer any bad signature gets
    assert result.body == {"error": "invalid signature"}
    assert queue.sent == []


def test_an_event_name_of_any_length_is_queued_cut_to_256_characters_so_the_message_still_fits() -> None:
    # Given a signed body of 150 KB whose event name is 140 KB of it (the name travels twice:
    # in the body and as the message's `event` attribute, which the queue's limit also counts)
    name = "activities." + "x" * 140_000
    body = json.dumps({"event": name, "data": {"account": ACCOUNT, "pad": "y" * 10_000}}).encode()
    queue = FakeQueue()
    # When it is received
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue)
    # Then it is accepted, the body queued whole, and the attribute holds the name's first 256 characters
    assert result.status == 202
    (sent,) = queue.sent
    assert sent.body == body
    assert sent.attributes()["event"]["StringValue"] == name[:256]
    assert sent.size() <= 262_144


@pytest.mark.parametrize(
    ("body", "outcome", "message"),
    [
        (b"not json", "not_json", "not valid JSON"),
        (b"", "not_json", "not valid JSON"),
        (b"[1, 2]", "not_object", "JSON object"),
        (b'"activities.added"', "not_object", "JSON object"),
        (b'{"name": "x"}', "no_event", "'event'"),
        (b'{"event": 42}', "no_event", "'event'"),
        (b'{"event": ""}', "no_event", "'event'"),
        (b'\xff\xfe{"event": "x"}', "not_utf8", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep", "nested too deeply"),
    ],
)
def test_signed_but_malformed_is_400_saying_what_is_wrong(body: bytes, outcome: str, message: str) -> None:
    queue = FakeQueue()
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert (result.status, result.outcome) == (400, outcome)
    assert message in result.body["error"]
    assert queue.sent == []


def test_body_too_large_for_the_queue_is_413() -> None:
    body = payload(padding="x" * 300_000)
    queue = FakeQueue()
    result = handle_webhook(signed_request(body), lambda: [SECRET], queue)
    assert (result.status, result.outcome) == (413, "too_large")
    assert queue.sent == []


def test_an_oversized_forged_body_is_413_before_any_secret_read_or_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given every HMAC this process computes, and every secret read, counted
    computed: list[int] = []
    real_new = hmac.new

    def counting_new(*args: Any, **kwargs: Any) -> hmac.HMAC:
        computed.append(1)
        return real_new(*args, **kwargs)

    monkeypatch.setattr(hmac, "new", counting_new)
    reads: list[str] = []

    def cached() -> list[str]:
        reads.append("cached")
        return [SECRET, "previous-secret"]

    def reread() -> list[str]:
        reads.append("reread")
        return [SECRET, "previous-secret"]

    def forged(size: int) -> WebhookRequest:
        body = b'{"event": "activities.added", "pad": "' + b"x" * (size - 40) + b'"}'
        body = body + b" " * (size - len(body))
        return WebhookRequest(body=body, headers={"x-argyle-signature": "0" * 128}, source_ip="198.51.100.7",
                              request_id="forged")

    queue = FakeQueue()
    # When a forged 6 MiB body arrives (API Gateway takes up to 10 MB)
    result = handle_webhook(forged(6 * 1024 * 1024), cached, queue, refreshed_secrets=reread)
    # Then it is 413 with nothing read, hashed or enqueued
    assert (result.status, result.outcome) == (413, "too_large")
    assert (computed, reads, queue.sent) == ([], [], [])

    # And the counter is live: a forged body at the limit costs what every oversized one used to,
    # a full HMAC pass per cached secret and again per re-read secret
    at_limit = handle_webhook(forged(262_144), cached, queue, refreshed_secrets=reread)
    assert at_limit.status == 401
    assert (len(computed), reads) == (4, ["cached", "reread"])


def test_the_body_limit_follows_the_queues() -> None:
    # A queue configured for 1 MiB (MAX_MESSAGE_BYTES) takes a body the default limit refuses
    body = payload(padding="x" * 300_000)
    queue = FakeQueue(max_bytes=1_048_576)
    assert handle_webhook(signed_request(body), lambda: [SECRET], queue).status == 413
    assert handle_webhook(signed_request(body), lambda: [SECRET], queue, max_body_bytes=1_048_576).status == 202


def test_queue_failure_is_5xx_never_2xx() -> None:
    result = handle_webhook(signed_request(payload()), lambda: [SECRET], FakeQueue(fail=True))
    assert result.status == 503
    assert not result.accepted


def test_source_ip_check_is_opt_in() -> None:
    body = payload()
    # Off by default: any address is fine when the signature is right
    assert handle_webhook(signed_request(body, source_ip="10.0.0.1"), lambda: [SECRET], FakeQueue()).status == 202
    # On: a genuine signature from elsewhere is refused, from Argyle's address accepted
    queue = FakeQueue()
    refused = handle_webhook(signed_request(body, source_ip="10.0.0.1"), lambda: [SECRET], queue,
                             allowed_ips=ARGYLE_WEBHOOK_IPS)
    assert (refused.status, queue.sent) == (403, [])
    assert handle_webhook(signed_request(body), lambda: [SECRET], queue, allowed_ips=ARGYLE_WEBHOOK_IPS).status == 202


def test_apigw_headers_are_case_insensitive_and_base64_bodies_decoded() -> None:
    body = payload()
    event = {"headers": {"X-ARGYLE-SIGNATURE": sign(body, SECRET)}, "isBase64Encoded": True,
             "body": base64.b64encode(body).decode(), "requestContext": {"requestId": "abc",
                                                                         "http": {"sourceIp": "1.2.3.4"}}}
    request = request_from_apigw(event)
    assert request.body == body
    assert request.source_ip == "1.2.3.4" and request.request_id == "abc"
    assert handle_webhook(request, lambda: [SECRET], FakeQueue()).status == 202


def test_rest_api_v1_event_shape_is_understood() -> None:
    request = request_from_apigw({"body": "{}", "headers": {"X-Argyle-Signature": "ab"},
                                  "requestContext": {"identity": {"sourceIp": "9.9.9.9"}}})
    assert request.source_ip == "9.9.9.9"
    assert request.header("X-Argyle-Signature") == "ab"


def test_invalid_base64_is_a_bad_request() -> None:
    with pytest.raises(BadRequestBody):
        request_from_apigw({"body": "!!!", "isBase64Encoded": True, "headers": {}})


def test_bodies_sqs_cannot_carry_as_text_travel_as_base64_unchanged() -> None:
    # U+FFFF is valid in JSON but not in an SQS message body
    body = '{"event": "x", "note": "\uffff"}'.encode()
    text, encoding = encode_body(body)
    assert encoding == "base64"
    assert decode_body(text, encoding) == body
    plain = b'{"event": "x"}'
    assert encode_body(plain) == (plain.decode(), "raw")


def test_secret_rotated_since_the_cache_was_filled_is_accepted_after_one_reread() -> None:
    # Given a cache that still holds the old secret and a body signed with the new one
    body = payload()
    rereads: list[int] = []

    def reread() -> list[str]:
        rereads.append(1)
        return ["new-secret", SECRET]

    queue = FakeQueue()
    result = handle_webhook(signed_request(body, secret="new-secret"), lambda: [SECRET], queue,
                            refreshed_secrets=reread)
    # Then the re-read secret verifies it, with exactly one re-read
    assert result.status == 202 and len(queue.sent) == 1
    assert rereads == [1]


def test_forged_request_rereads_at_most_as_the_limiter_allows() -> None:
    from argyle_pipeline.aws.secret_values import RefreshLimiter

    clock = [0.0]
    limiter = RefreshLimiter(interval=10.0, clock=lambda: clock[0])
    reads: list[int] = []

    def reread() -> list[str] | None:
        if not limiter.allow():
            return None
        reads.append(1)
        return [SECRET]

    queue = FakeQueue()
    for _ in range(50):
        assert handle_webhook(signed_request(payload(), secret="forged"), lambda: [SECRET], queue,
                              refreshed_secrets=reread).status == 401
    clock[0] = 11.0
    handle_webhook(signed_request(payload(), secret="forged"), lambda: [SECRET], queue, refreshed_secrets=reread)
    assert len(reads) == 2 and queue.sent == []


def test_missing_signature_never_triggers_a_reread() -> None:
    calls: list[int] = []
    request = WebhookRequest(payload(), {}, None, "r")
    result = handle_webhook(request, lambda: [SECRET], FakeQueue(), refreshed_secrets=lambda: calls.append(1) or [])
    assert result.status == 401 and calls == []


def test_each_delivery_has_its_own_sqs_deduplication_id_and_the_body_keeps_its_key() -> None:
    # Given one body delivered twice by Argyle (two requests), and the first delivery sent twice
    body = payload("activities.updated", updated_activities=["a1"])
    queue = FakeQueue()
    for request_id in ("req-1", "req-2", "req-1"):
        request = WebhookRequest(body, {"x-argyle-signature": sign(body, SECRET)}, None, request_id)
        assert handle_webhook(request, lambda: [SECRET], queue).status == 202
    first, second, resent = queue.sent
    # Then each message keeps the body's key (what the sync calls the same event)...
    assert first.dedupe_key == second.dedupe_key == resent.dedupe_key == dedupe_key(body)
    # ...but SQS's deduplication id is the delivery's: SQS can drop the re-send of a delivery,
    # never Argyle's later delivery of the same bytes
    assert first.deduplication_id == resent.deduplication_id == hashlib.sha256(body + b"\nreq-1").hexdigest()
    assert second.deduplication_id != first.deduplication_id


def test_a_delivery_without_a_request_id_still_gets_a_deduplication_id_of_its_own() -> None:
    body = payload()
    queue = FakeQueue()
    for _ in range(2):
        request = WebhookRequest(body, {"x-argyle-signature": sign(body, SECRET)}, None, "")
        handle_webhook(request, lambda: [SECRET], queue)
    ids = [event.deduplication_id for event in queue.sent]
    assert len(set(ids)) == 2 and all(len(i) == 64 for i in ids)
