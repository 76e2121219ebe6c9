from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from argyle_pipeline.aws.secret_values import (
    SecretMalformed,
    parse_argyle_credentials,
    parse_webhook_secrets,
    rotated_webhook_secret_value,
)


def test_plain_string_secret() -> None:
    assert parse_webhook_secrets("s3cret") == ("s3cret",)


NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _value(expires_at: object = "2027-01-16T08:00:00Z", **extra: object) -> str:
    return json.dumps({"current": "new", "previous": "old", "previous_expires_at": expires_at, **extra})


def test_current_and_previous_are_both_accepted_until_previous_expires() -> None:
    assert parse_webhook_secrets(_value(), now=NOW) == ("new", "old")
    # One second before the expiry previous still verifies; at the expiry it no longer does
    deadline = datetime(2027, 1, 16, 8, tzinfo=UTC).timestamp()
    assert parse_webhook_secrets(_value(), now=deadline - 1) == ("new", "old")
    assert parse_webhook_secrets(_value(), now=deadline) == ("new",)


@pytest.mark.parametrize("expires_at", [None, "", "tomorrow", 1_900_000_000, "2027-13-40T00:00:00Z"])
def test_a_previous_without_a_readable_expiry_is_never_accepted(expires_at: object) -> None:
    # Fail closed: a hand-written {"current", "previous"} (or a garbled expiry) keeps only current
    value = _value(expires_at) if expires_at is not None else '{"current": "new", "previous": "old"}'
    assert parse_webhook_secrets(value, now=NOW) == ("new",)


def test_an_expiry_without_a_zone_is_utc() -> None:
    assert parse_webhook_secrets(_value("2027-01-15T08:00:01"), now=NOW) == ("new", "old")
    assert parse_webhook_secrets(_value("2027-01-15T08:00:00"), now=NOW) == ("new",)


def test_empty_previous_is_dropped_and_empty_secret_gives_nothing() -> None:
    assert parse_webhook_secrets('{"current": "new", "previous": ""}') == ("new",)
    assert parse_webhook_secrets("") == ()
    assert parse_webhook_secrets('{"current": ""}') == ()


def test_malformed_json_secret_is_an_error_not_a_plain_secret() -> None:
    with pytest.raises(SecretMalformed):
        parse_webhook_secrets('{"current": ')


def test_rotation_moves_current_to_previous_with_an_expiry() -> None:
    value = rotated_webhook_secret_value("newest", _value(), previous_valid_seconds=3600, now=NOW)
    assert json.loads(value) == {"current": "newest", "previous": "new",
                                 "previous_expires_at": "2027-01-15T09:00:00Z"}
    assert parse_webhook_secrets(value, now=NOW + 3599) == ("newest", "new")
    assert parse_webhook_secrets(value, now=NOW + 3600) == ("newest",)
    assert parse_webhook_secrets(rotated_webhook_secret_value("first", None)) == ("first",)


def test_rotation_by_default_keeps_previous_for_a_day() -> None:
    value = json.loads(rotated_webhook_secret_value("newest", "plain-old", now=NOW))
    assert value["previous"] == "plain-old"
    assert value["previous_expires_at"] == "2027-01-16T08:00:00Z"


def test_rotation_that_revokes_keeps_no_previous() -> None:
    # After a leak: the old secret must stop verifying at once, not at its expiry
    value = rotated_webhook_secret_value("fresh", _value(), previous_valid_seconds=0, now=NOW)
    assert json.loads(value) == {"current": "fresh", "previous": ""}
    assert parse_webhook_secrets(value, now=NOW) == ("fresh",)


def test_argyle_credentials_parse_and_hide_the_secret_in_repr() -> None:
    creds = parse_argyle_credentials('{"api_key_id": "id1", "api_key_secret": "very-secret"}')
    assert (creds.api_key_id, creds.api_key_secret) == ("id1", "very-secret")
    assert "very-secret" not in repr(creds)


@pytest.mark.parametrize(
    "value", ["not json", "[]", '{"api_key_id": "x"}', '{"api_key_id": "", "api_key_secret": "y"}'])
def test_argyle_credentials_malformed(value: str) -> None:
    with pytest.raises(SecretMalformed):
        parse_argyle_credentials(value)


def test_rotation_from_a_cleared_secret_keeps_no_previous() -> None:
    # A value whose current secret was cleared holds nothing to keep as previous
    assert json.loads(rotated_webhook_secret_value("fresh", '{"current": "", "previous": ""}')) == {
        "current": "fresh", "previous": ""}
